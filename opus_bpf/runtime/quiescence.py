"""Quiescence: a moment when no thread is inside any function being replaced.

The BPF activation count says when to look; the authoritative check stops every thread and
scans its PC and its whole live stack (rsp up to the end of the stack mapping) for any address
inside the functions, their `.cold`/`.part` pieces, or the kernel's `[uprobes]` area (a uretprobe
trampoline stands in for a return address). The scan is conservative: a stale word that looks
like a return address only makes us wait and look again, never patch too early. A function
pointer equal to an entry address is not an activation and is ignored.

Each look is one short pause; between looks the process runs, with a growing back-off so that a
busy function never freezes the target for more than one verification pause at a time.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from opus_bpf.errors import ProcessExited, QuiescenceTimeout
from opus_bpf.runtime import threads as T
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.probes import ActivationProbes
from opus_bpf.target.process import Mapping, read_maps

MAX_STACK_SCAN = 8 << 20


@dataclass(frozen=True)
class CodeRange:
    start: int
    end: int
    label: str  # function name, for the operator


@dataclass
class Activation:
    tid: int
    label: str
    where: str  # "pc" or "stack"
    address: int


HOT_HITS_PER_SECOND = 20000.0  # above this the probes cost more than they tell


@dataclass
class WaitStats:
    probes_dropped_hot: bool = False
    attempts: int = 0
    wait_seconds: float = 0.0
    pauses: list[float] = field(default_factory=list)
    probe_hits: int = 0
    last_busy: Activation | None = None


class RangeSet:
    """The code ranges being watched, as sorted bounds: one `searchsorted` classifies a stack."""

    def __init__(self, ranges: list[CodeRange]) -> None:
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self.bounds = np.array([b for r in self.ranges for b in (r.start, r.end)], dtype=np.uint64)
        self.entries = {r.start for r in ranges}

    def label(self, addr: int) -> str | None:
        for r in self.ranges:
            if r.start <= addr < r.end:
                return r.label
        return None

    def first_in(self, words: np.ndarray) -> int | None:
        """First word inside a range that is not just a function's entry address."""
        if not len(self.bounds) or not len(words):
            return None
        near = words[(words >= self.bounds[0]) & (words < self.bounds[-1])]
        if not len(near):
            return None
        idx = np.searchsorted(self.bounds, near, side="right")
        for w in near[(idx & 1) == 1].tolist():
            if w not in self.entries:
                return int(w)
        return None


def thread_activation(
    st: T.StoppedThread,
    mem: ProcessMemory,
    maps: list[Mapping],
    starts: list[int],
    rs: RangeSet,
) -> Activation | None:
    """Is this stopped thread executing in, or returning into, one of the watched ranges?"""
    regs = st.regs if st.regs is not None else T.get_regs(st.tid)
    label = rs.label(regs.rip)
    if label is not None:
        return Activation(st.tid, label, "pc", regs.rip)
    sp = regs.rsp
    i = bisect.bisect_right(starts, sp) - 1
    stack = maps[i] if i >= 0 and maps[i].start <= sp < maps[i].end else None
    if stack is None:
        return Activation(st.tid, "an unmapped stack pointer", "stack", sp)
    length = min(stack.end - sp, MAX_STACK_SCAN) & ~7
    words = np.frombuffer(mem.read(sp, length), dtype="<u8")
    hit = rs.first_in(words)
    if hit is not None:
        return Activation(st.tid, rs.label(hit) or "?", "stack", hit)
    return None


def _with_uprobes(maps: list[Mapping], ranges: list[CodeRange]) -> list[CodeRange]:
    return ranges + [
        CodeRange(m.start, m.end, "[uprobes] (a probed function is active)")
        for m in maps
        if m.path == "[uprobes]"
    ]


def settle(
    world: T.World,
    mem: ProcessMemory,
    maps: list[Mapping],
    ranges: list[CodeRange],
    budget_seconds: float = 0.005,
    slice_seconds: float = 0.0002,
) -> Activation | None:
    """Let only the busy threads run, briefly, until none is inside; the rest stay held.

    With many threads calling a hot function, the chance that a stop catches every one of them
    outside it is (1 - f)^n. Holding the threads already outside and releasing just the busy
    ones for a fraction of a millisecond makes each of them leave on its own: a short function
    is left within microseconds, and a thread caught outside stays held. Bounded: once the
    rounds have taken `budget_seconds` the caller resumes everything.
    """
    deadline = time.monotonic() + budget_seconds
    rs = RangeSet(_with_uprobes(maps, ranges))
    starts = [m.start for m in maps]  # maps are in address order: bisect finds a stack
    busy = {}
    for st in world.threads.values():
        hit = thread_activation(st, mem, maps, starts, rs)
        if hit is not None:
            busy[st.tid] = hit
    while time.monotonic() < deadline:
        if not busy:
            return None
        for tid in busy:
            st = world.threads[tid]
            T.ptrace(T.PTRACE_CONT, tid, 0, st.signal)
            st.signal = 0
            st.stopped = False
        time.sleep(slice_seconds)
        for tid in busy:
            with contextlib.suppress(T.PtraceFailed):  # exited meanwhile: wait_stop says so
                T.ptrace(T.PTRACE_INTERRUPT, tid)
        still = {}
        for tid in busy:
            st = world.threads[tid]
            if not T.wait_stop(st):
                world.threads.pop(tid, None)
                continue
            st.regs = T.get_regs(tid)
            hit = thread_activation(st, mem, maps, starts, rs)
            if hit is not None:
                still[tid] = hit
        busy = still
    return next(iter(busy.values())) if busy else None


def wait_for_quiescence(
    pid: int,
    mem: ProcessMemory,
    ranges: list[CodeRange],
    probes: ActivationProbes | None,
    timeout: float,
    on_quiescent: Callable[[T.World], None],
    force_look_every: float = 0.1,
) -> WaitStats:
    """Stop the world at a quiescent moment and run `on_quiescent` while it is stopped.

    `on_quiescent` runs with every thread held; whatever it raises, the threads are resumed.
    Raises QuiescenceTimeout (the process untouched) when no such moment came before `timeout`.
    """
    stats = WaitStats()
    t0 = time.monotonic()
    with realtime():
        return _wait(pid, mem, ranges, probes, timeout, on_quiescent, force_look_every, stats, t0)


@contextlib.contextmanager
def realtime() -> Iterator[None]:
    """Run the tracer at real-time priority while it waits and pauses.

    With more runnable target threads than cores, a tracer at normal priority gets a fair share
    of a core while every thread it has already stopped waits for it; SCHED_FIFO lets it run the
    moment a ptrace stop or a waitpid completes. The tracer only ever blocks, so it cannot starve
    the machine.
    """
    try:
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (PermissionError, OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, old[0], old[1])


def _wait(
    pid: int,
    mem: ProcessMemory,
    ranges: list[CodeRange],
    probes: ActivationProbes | None,
    timeout: float,
    on_quiescent: Callable[[T.World], None],
    force_look_every: float,
    stats: WaitStats,
    t0: float,
) -> WaitStats:
    deadline = t0 + timeout
    backoff = 0.001
    last_look = 0.0
    while True:
        now = time.monotonic()
        live = probes.live() if probes is not None else 0
        if probes is not None and live > 0 and now - t0 > 0.05:
            rate = probes.hits() / (now - t0)
            if rate > HOT_HITS_PER_SECOND:
                # a hot function: the count is never zero and every call pays a trap; rely on
                # the stack check with settling instead
                stats.probe_hits = probes.hits()
                probes.detach()
                probes = None
                stats.probes_dropped_hot = True
                live = 0
        if live <= 0 or now - last_look >= force_look_every:
            last_look = now
            stats.attempts += 1
            maps = read_maps(pid)
            world = T.stop_world(pid)
            try:
                busy = settle(world, mem, maps, ranges)
                if busy is None:
                    stats.wait_seconds = time.monotonic() - t0
                    on_quiescent(world)
                    T.resume_world(world)
                    stats.pauses.append(world.pause_seconds)
                    if probes is not None:
                        stats.probe_hits = probes.hits()
                    return stats
            except BaseException:
                T.resume_world(world)
                raise
            T.resume_world(world)
            stats.pauses.append(world.pause_seconds)
            stats.last_busy = busy
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.05)
        else:
            time.sleep(0.0005)
        if time.monotonic() > deadline:
            stats.wait_seconds = time.monotonic() - t0
            if probes is not None:
                stats.probe_hits = probes.hits()
            b = stats.last_busy
            if b is not None:
                why = (
                    f"thread {b.tid} was {'executing' if b.where == 'pc' else 'returning into'} "
                    f"{b.label}"
                )
            else:
                why = f"BPF probes counted {live} live activation(s)"
            err = QuiescenceTimeout(
                f"timed out after {timeout:g}s waiting for the functions to be idle ({why}; "
                f"{stats.attempts} looks); nothing was changed: retry later or raise --timeout"
            )
            err.stats = stats  # type: ignore[attr-defined]  # the figures of the failed wait
            raise err
        if not T.list_threads(pid):
            raise ProcessExited(f"process {pid} exited")
