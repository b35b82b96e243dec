"""Per-thread activation: new calls reach the new code at once, old activations retire one
thread at a time, and the process is never stopped as a whole (docs/runtime.md, "Per-thread
mode", argues each step).

A *switch* rewrites each entry from the bytes it holds (`before`) to the bytes it must hold
(`after`: the jump to the new function on apply, the original instructions on revert):

1. the SIGTRAP handler goes into the target (runtime/traphandler.py);
2. *arm*: one `int3` at each entry; every new call traps and the handler, in the calling
   thread, sends it to the destination: no tracer is involved, so none can be missed;
3. *pass 1*, one thread held at a time: a thread inside the bytes about to change is
   single-stepped out of them; nothing can enter them again except through the trap;
4. *tail*: bytes 1.. of `after` are written behind the trap byte;
5. *pass 2*: every thread passes through the kernel (serialising) before the head changes;
6. *head*: the first byte of `after` is written;
7. *pass 3*: each thread that existed at the arm is checked (PC and stack) against the code
   switched away from: outside, it can never enter it again; inside, it is *busy*;
8. the handler is removed once no trap of ours is queued;
9. *retire*: each busy thread is looked at alone when the BPF exit probes count that it left
   an old function (or after a back-off), until none is left or the timeout.

On timeout the same switch runs backwards and the activations of the code being undone retire
the same way; then the caller unloads what it loaded.
"""

from __future__ import annotations

import bisect
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opus_bpf.errors import InjectionError, OpusError, ProcessExited, QuiescenceTimeout
from opus_bpf.runtime import gate as G
from opus_bpf.runtime import loader as L
from opus_bpf.runtime import threads as T
from opus_bpf.runtime import traphandler as TH
from opus_bpf.runtime.failpoints import failpoint
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.probes import ExitProbes, ProbeSite
from opus_bpf.runtime.quiescence import (
    Activation,
    CodeRange,
    RangeSet,
    realtime,
    thread_activation,
)
from opus_bpf.runtime.remote import RemoteCaller
from opus_bpf.target.process import Mapping, read_maps

INT3 = b"\xcc"
PTRACE_SINGLESTEP = 9


class PerThreadUnsupported(OpusError):
    """This process cannot be switched thread by thread; the consistent mode can."""


MAX_STEPS = 16
STOP_TIMEOUT = 10.0  # seconds a thread may take to reach its interrupt stop
LOOK_BACKOFF = (0.001, 0.1)  # a busy thread is looked at again after this, doubling, at most


@dataclass(frozen=True)
class Switch:
    """One entry to rewrite, and where a call that traps there meanwhile must go."""

    name: str
    entry: int
    before: bytes
    after: bytes
    trap_dest: int

    def inverse(self, trap_dest: int) -> Switch:
        return Switch(self.name, self.entry, self.after, self.before, trap_dest)


@dataclass
class PerThreadStats:
    holds: list[float] = field(default_factory=list)  # every hold of one thread, seconds
    remote_holds: list[float] = field(default_factory=list)  # of those: remote system calls
    world_pause_seconds: float = 0.0
    redirect_seconds: float = 0.0  # from the start of the switch until every entry traps
    switch_seconds: float = 0.0  # until the entries hold their final bytes
    retire_seconds: float = 0.0  # until no thread holds an activation of the watched code
    looks: int = 0
    busy_threads: int = 0
    probe_setup_seconds: float = 0.0
    probe_detach_seconds: float = 0.0


def quiet_thread(pid: int) -> int:
    """A thread to run remote system calls in: one asleep in the kernel (holding it delays
    nothing it was doing), the main thread when none is."""
    for tid in T.list_threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "S":
                    return tid
        except (OSError, IndexError):
            continue
    return pid


def _remote(pid: int, mem: ProcessMemory) -> RemoteCaller:
    return RemoteCaller(pid, mem, quiet_thread(pid))


def _close(rc: RemoteCaller, stats: PerThreadStats) -> None:
    rc.close()
    stats.holds.append(time.monotonic() - rc.thread.since)
    stats.remote_holds.append(stats.holds[-1])


_EXIT = re.compile(r"^(?:bnd |notrack |rep[a-z]* )*(ret[a-z]*|jmp[a-z]*)\s*(\S*)")


def exit_sites(path: str, pieces: list[tuple[int, int]], name: str, skip_below: int) -> list[int]:
    """Link-time addresses of the instructions that leave a function: returns, and jumps out
    of its pieces (tail calls) or through a register (maybe a tail call)."""
    out = []
    for lo, hi in pieces:
        for insn in G.disassemble(path, lo, hi):
            if insn.addr < skip_below:
                continue
            m = _EXIT.match(insn.text)
            if not m:
                continue
            if m.group(1).startswith("ret"):
                out.append(insn.addr)
                continue
            target = m.group(2)
            if target.startswith("*"):
                out.append(insn.addr)
                continue
            try:
                dest = int(target, 16)
            except ValueError:
                continue
            if not any(a <= dest < b for a, b in pieces):
                out.append(insn.addr)
    return out


class _Checker:
    """PC and whole-stack check of one held thread against the watched ranges."""

    def __init__(self, pid: int, mem: ProcessMemory, ranges: list[CodeRange]) -> None:
        self.pid, self.mem = pid, mem
        self.refresh()
        self.base_ranges = ranges
        self.set_ranges(ranges)

    def refresh(self) -> None:
        self.maps: list[Mapping] = read_maps(self.pid)
        self.starts = [m.start for m in self.maps]

    def set_ranges(self, ranges: list[CodeRange]) -> None:
        self.rs = RangeSet(
            ranges
            + [
                CodeRange(m.start, m.end, "[uprobes] (a probed instruction of old code)")
                for m in self.maps
                if m.path == "[uprobes]"
            ]
        )

    def check(self, tid: int, regs: T.Regs) -> Activation | None:
        st = T.StoppedThread(tid, regs, stopped=True)
        sp = regs.rsp
        i = bisect.bisect_right(self.starts, sp) - 1
        if i < 0 or not self.maps[i].start <= sp < self.maps[i].end:
            self.refresh()  # a new thread's stack: mapped after our last read
            self.set_ranges(self.base_ranges)
        return thread_activation(st, self.mem, self.maps, self.starts, self.rs)


class Held:
    """One thread of the process seized and stopped alone; everything else keeps running."""

    def __init__(self, pid: int, tid: int, stats: PerThreadStats, alone: bool = False) -> None:
        if _LATE:
            reap_late()
        self.pid, self.tid, self.stats, self.alone = pid, tid, stats, alone
        self.since = time.monotonic()
        self.st = T.StoppedThread(tid)
        self.regs: T.Regs | None = None
        if not T.seize(tid):
            return
        try:
            T.ptrace(T.PTRACE_INTERRUPT, tid)
        except T.PtraceFailed:
            _LATE.add(tid)  # exiting; if not, detached when its stop shows up
            return
        # the hold starts when the thread stops: a runnable thread waits for a CPU before it
        # can stop, and that wait is the scheduler's, not ours (the tracer runs SCHED_FIFO, so
        # it learns of the stop at once)
        try:
            with T._Watchdog(STOP_TIMEOUT):
                stopped = T.wait_stop(self.st)
        except T.StopTimeout:
            # in uninterruptible sleep: it runs no user code. It stays seized with its interrupt
            # pending: reap_late() detaches it once it stops (a CLI run simply exits, and the
            # kernel detaches it then; a long-lived agent must not leave it behind)
            _LATE.add(tid)
            raise OpusError(
                f"thread {tid} of process {pid} did not stop within {STOP_TIMEOUT:g}s "
                "(uninterruptible sleep?); see `opus-bpf status` and retry"
            ) from None
        if stopped:
            self.since = time.monotonic()
            self.regs = T.get_regs(tid)
            failpoint("perthread:held")

    @property
    def trapped(self) -> bool:
        """It hit a trap byte: the SIGTRAP is in hand (or queued) and goes to the handler."""
        return self.st.signal == signal.SIGTRAP or sigtrap_pending(self.tid)

    def step(self) -> T.Regs | None:
        """Execute one instruction; a signal that arrives meanwhile is kept for the release."""
        T.ptrace(PTRACE_SINGLESTEP, self.tid, 0, 0)
        try:
            _, status = os.waitpid(self.tid, T.WALL)
        except ChildProcessError:
            status = 0
        if not os.WIFSTOPPED(status):
            self.st.stopped = False
            self.regs = None
            return None
        sig = os.WSTOPSIG(status)
        if (status >> 16) == 0 and sig != signal.SIGTRAP:
            self.st.signal = self.st.signal or sig
        self.regs = T.get_regs(self.tid)
        return self.regs

    def release(self) -> None:
        if self.st.stopped:
            T.detach(self.tid, self.st.signal)
        now = time.monotonic()
        self.stats.holds.append(now - self.since)
        if self.alone:  # a single-threaded process: holding its thread pauses all of it
            self.stats.world_pause_seconds += now - self.since

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_LATE: set[int] = set()  # threads seized whose interrupt stop never came in time


def reap_late(wait_seconds: float = 0.0) -> None:
    """Detach every late thread that has stopped (or forget it if it exited), waiting up to
    `wait_seconds` for the others."""
    deadline = time.monotonic() + wait_seconds
    while _LATE:
        _LATE.difference_update({tid for tid in _LATE if T.detach_once_stopped(tid)})
        if not _LATE or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _sigmask(tid: int, field_name: str) -> int:
    value = T.status_field(tid, field_name)
    return int(value, 16) if value else 0


def _sigtrap_default(pid: int) -> bool:
    """The process neither catches nor ignores SIGTRAP (its action is SIG_DFL)."""
    bit = 1 << (signal.SIGTRAP - 1)
    return not (_sigmask(pid, "SigCgt") & bit or _sigmask(pid, "SigIgn") & bit)


def sigtrap_pending(tid: int) -> bool:
    """A SIGTRAP is queued for this thread (a trap it hit that no handler has taken yet)."""
    return bool(_sigmask(tid, "SigPnd") & (1 << (signal.SIGTRAP - 1)))


def check_signal_masks(pid: int, tries: int = 20) -> None:
    """The kernel kills a thread that traps with SIGTRAP blocked (it resets the action to the
    default first): refuse the per-thread mode for a process with such a thread. A mask seen
    once may be a handler's transient one: only a thread that blocks it every time counts."""
    blocking = set(T.list_threads(pid))
    for _ in range(tries):
        blocking = {t for t in blocking if _sigmask(t, "SigBlk") & (1 << (signal.SIGTRAP - 1))}
        if not blocking:
            return
        time.sleep(0.001)
    tid = min(blocking)
    raise PerThreadUnsupported(
        f"thread {tid} of process {pid} blocks SIGTRAP, so a trap at an old entry would kill "
        "it; use --mode consistent"
    )


def _each(pid: int, stats: PerThreadStats, fn: Callable[[Held], None]) -> None:
    """Hold every thread in turn, never two at once, and run `fn` on each."""
    tids = T.list_threads(pid)
    for tid in tids:
        with Held(pid, tid, stats, alone=len(tids) == 1) as h:
            if h.regs is not None:
                fn(h)


def switch_entries(
    pid: int,
    mem: ProcessMemory,
    switches: list[Switch],
    area: int,
    watched: list[CodeRange],
    stats: PerThreadStats,
) -> dict[int, Activation]:
    """Steps 1-8: rewrite every entry with no two threads held together. Returns the threads
    still holding an activation of `watched` code, with what was found."""
    t_start = time.monotonic()
    todo = [s for s in switches if s.before != s.after]
    TH.write_area(mem, area, {s.entry: s.trap_dest for s in switches})
    # buffers for the launched rt_sigaction calls: the end of the patch record page, just
    # before the gate page that holds the handler
    scratch = area - TH.TRAP_OFFSET - L.RECORD_SCRATCH
    if _sigtrap_default(pid):
        fresh, holds = TH.install_launched(pid, mem, quiet_thread(pid), area, scratch)
        stats.holds += holds
        stats.remote_holds += holds
        if fresh is None:
            raise InjectionError(
                f"process {pid} did not run the system call that installs the trap handler "
                "within 10 s; nothing was switched"
            )
    else:
        rc = _remote(pid, mem)
        try:
            TH.install(rc, area, False)
        finally:
            _close(rc, stats)
    check_signal_masks(pid)
    failpoint("perthread:installed")
    checker = _Checker(pid, mem, watched)
    busy: dict[int, Activation] = {}

    for s in todo:
        mem.write(s.entry, INT3)
    stats.redirect_seconds = time.monotonic() - t_start
    at_arm = set(T.list_threads(pid))  # every thread that can have begun old code
    failpoint("perthread:armed")

    def out_of_window(h: Held) -> None:
        regs = h.regs
        for _ in range(MAX_STEPS):
            if regs is None:
                return
            inside = next((s for s in todo if s.entry < regs.rip < s.entry + len(s.after)), None)
            if inside is None:
                return
            if regs.rip == inside.entry + 1 and h.trapped:
                return  # it executed the trap: the handler sends it on when we let go
            regs = h.step()
        raise ProcessExited(f"thread {h.tid} did not leave the first bytes of a function")

    _each(pid, stats, out_of_window)
    for s in todo:
        mem.write(s.entry + 1, s.after[1:])
    failpoint("perthread:tail")
    _each(pid, stats, lambda h: None)
    for s in todo:
        mem.write(s.entry, s.after[:1])
    stats.switch_seconds = time.monotonic() - t_start
    failpoint("perthread:head")

    def settle(h: Held) -> None:
        stats.looks += 1
        if h.tid not in at_arm or h.regs is None:
            return  # began after the arm: it can only have entered the new code
        hit = checker.check(h.tid, h.regs)
        if hit is not None:
            busy[h.tid] = hit

    _each(pid, stats, settle)
    # a trap taken just before the head write may still be queued (every thread has been
    # through a stop since, and no trap byte is left): the handler must take it before it goes
    trapped = {t for t in T.list_threads(pid) if sigtrap_pending(t)}
    deadline = time.monotonic() + 2.0
    while trapped and time.monotonic() < deadline:
        trapped = {t for t in trapped if sigtrap_pending(t)}
        if trapped:
            time.sleep(0.0002)
    failpoint("perthread:settled")
    if not trapped:
        _done, holds = TH.uninstall_launched(pid, mem, quiet_thread(pid), area, scratch)
        stats.holds += holds
        stats.remote_holds += holds
    return busy


def _look_alone(pid: int, tid: int, checker: _Checker, stats: PerThreadStats) -> Activation | None:
    """Hold one thread alone and check it; None when it is outside (or gone)."""
    with Held(pid, tid, stats, alone=len(T.list_threads(pid)) == 1) as h:
        if h.regs is None:
            return None
        stats.looks += 1
        return checker.check(tid, h.regs)


def retire(
    pid: int,
    mem: ProcessMemory,
    busy: dict[int, Activation],
    watched: list[CodeRange],
    probes: ExitProbes | None,
    deadline: float,
    stats: PerThreadStats,
) -> dict[int, Activation]:
    """Step 9: look at each busy thread alone until none holds a watched activation, or the
    deadline passes; returns the threads still busy then."""
    checker = _Checker(pid, mem, watched)
    seen = {tid: probes.count(tid) if probes else 0 for tid in busy}
    wait = dict.fromkeys(busy, LOOK_BACKOFF[0])
    due = {tid: time.monotonic() + LOOK_BACKOFF[0] for tid in busy}
    while busy:
        now = time.monotonic()
        for tid in list(busy):
            moved = probes is not None and probes.count(tid) != seen[tid]
            if not moved and now < due[tid]:
                continue
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                del busy[tid]
                continue
            seen[tid] = probes.count(tid) if probes else 0
            failpoint("perthread:retire")
            hit = _look_alone(pid, tid, checker, stats)
            if hit is None:
                del busy[tid]
                continue
            busy[tid] = hit
            wait[tid] = min(wait[tid] * 2, LOOK_BACKOFF[1])
            due[tid] = time.monotonic() + wait[tid]
        if not busy:
            break
        if not T.list_threads(pid):
            raise ProcessExited(f"process {pid} exited")
        if time.monotonic() > deadline:
            return busy
        time.sleep(0.0005)
    return busy


def activate(
    pid: int,
    mem: ProcessMemory,
    switches: list[Switch],
    area: int,
    old_code: list[CodeRange],
    new_code: list[CodeRange],
    probe_sites: list[ProbeSite],
    timeout: float,
) -> PerThreadStats:
    """Switch the entries and retire every activation of the code switched away from. On
    timeout, switch back and retire the other way, then raise QuiescenceTimeout (the figures
    ride on it as `.stats`): the entries hold their `before` bytes again."""
    stats = PerThreadStats()
    probes = ExitProbes(pid, probe_sites) if probe_sites else None
    stats.probe_setup_seconds = probes.setup_seconds if probes else 0.0
    t0 = time.monotonic()
    try:
        with realtime():
            busy = switch_entries(pid, mem, switches, area, old_code, stats)
            stats.busy_threads = len(busy)
            left = retire(pid, mem, busy, old_code, probes, t0 + timeout, stats)
            stats.retire_seconds = time.monotonic() - t0 - stats.switch_seconds
    finally:
        reap_late(STOP_TIMEOUT)
        if probes is not None:
            probes.detach()
            stats.probe_detach_seconds = probes.detach_seconds
    if not left:
        return stats
    tid, hit = next(iter(left.items()))
    # a call that traps while we switch back goes where the entry sends it now
    back = [s.inverse(s.trap_dest) for s in switches]
    undo = PerThreadStats()
    try:
        with realtime():
            busy = switch_entries(pid, mem, back, area, new_code, undo)
            still = retire(
                pid, mem, busy, new_code, None, time.monotonic() + max(timeout, 5.0), undo
            )
    finally:
        reap_late(STOP_TIMEOUT)
    err = QuiescenceTimeout(
        f"timed out after {timeout:g}s: thread {tid} was still "
        f"{'executing' if hit.where == 'pc' else 'returning into'} {hit.label}; "
        + (
            "every entry was switched back and nothing was changed: retry later or raise --timeout"
            if not still
            else "the entries were switched back, but a thread is still inside the new code, "
            "which stays loaded"
        )
    )
    stats.holds += undo.holds
    err.stats = stats  # type: ignore[attr-defined]
    err.new_code_busy = bool(still)  # type: ignore[attr-defined]
    raise err
