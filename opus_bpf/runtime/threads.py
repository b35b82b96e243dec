"""Stopping and resuming every thread of a process with PTRACE_SEIZE + PTRACE_INTERRUPT.

Why SEIZE and not ATTACH: an interrupt stop sends no signal, so a tracer that dies (even by
SIGKILL) leaves the threads running exactly where they were: the kernel detaches a dead tracer's
tracees and a pending interrupt trap is dropped with the link. PTRACE_O_EXITKILL is never set.

The calls go straight to libc through ctypes (python-ptrace's register structure is reused):
a pause measured in microseconds has no room for python-ptrace's polling event loop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from ptrace.binding.func import ptrace_registers_t

from opus_bpf.errors import OpusError, PermissionProblem, ProcessExited

PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SYSCALL = 24
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACECLONE = 0x8
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_STOP = 128
WALL = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long

Regs = ptrace_registers_t


class PtraceFailed(OSError):
    """A ptrace request failed; errno tells which (ESRCH: the thread is gone)."""


def ptrace(request: int, tid: int, addr: int = 0, data: int | ctypes.c_void_p = 0) -> int:
    res = _libc.ptrace(request, tid, addr, data)
    if res == -1:
        err = ctypes.get_errno()
        if err:
            raise PtraceFailed(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")
    return res


def get_regs(tid: int) -> Regs:
    regs = Regs()
    ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return regs


def set_regs(tid: int, regs: Regs) -> None:
    ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


def copy_regs(regs: Regs) -> Regs:
    out = Regs()
    ctypes.memmove(ctypes.addressof(out), ctypes.addressof(regs), ctypes.sizeof(Regs))
    return out


def list_threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError as exc:
        raise ProcessExited(f"process {pid} exited") from exc


@dataclass
class StoppedThread:
    """A thread held in a ptrace stop, with what must be handed back when it is let go."""

    tid: int
    regs: Regs | None = None
    signal: int = 0  # a signal that arrived while we held it: re-delivered at detach
    group_stop: bool = False
    stopped: bool = False


class StopTimeout(Exception):
    pass


@dataclass
class World:
    """Every thread of one process, seized and stopped: the state of a stop-the-world pause."""

    pid: int
    threads: dict[int, StoppedThread] = field(default_factory=dict)
    started: float = 0.0  # monotonic time of the first interrupt
    resumed: float = 0.0  # monotonic time the last thread was let go

    @property
    def pause_seconds(self) -> float:
        return max(0.0, self.resumed - self.started)


def seize(tid: int, options: int = PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD) -> bool:
    """Seize one thread; False when it has already exited."""
    try:
        ptrace(PTRACE_SEIZE, tid, 0, options)
        return True
    except PtraceFailed as exc:
        if exc.errno == errno.ESRCH:
            return False
        if exc.errno == errno.EPERM and _exiting(tid):
            return False
        if exc.errno == errno.EPERM:
            raise PermissionProblem(
                f"not allowed to trace thread {tid}: run as root, check "
                "/proc/sys/kernel/yama/ptrace_scope and that no debugger is attached"
            ) from exc
        raise


def wait_stop(st: StoppedThread) -> bool:
    """Block until the seized thread reports a stop; False if it exited instead.

    A signal that arrives first is a signal-delivery-stop: the thread is stopped all the same,
    and the signal is remembered so that detach hands it back.
    """
    while True:
        try:
            _, status = os.waitpid(st.tid, WALL)
        except ChildProcessError:
            return False
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            return False
        if not os.WIFSTOPPED(status):
            continue
        st.stopped = True
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == PTRACE_EVENT_STOP:
            st.group_stop = sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
            return True
        if event == PTRACE_EVENT_CLONE or sig == (signal.SIGTRAP | 0x80):
            return True  # stopped at a clone event or a syscall stop: stopped all the same
        if event == 0:
            st.signal = sig
            return True
        return True


class _Watchdog:
    """Bounds a blocking wait for stops (a thread in D state must not freeze us forever)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False

    installed = False

    def __enter__(self) -> _Watchdog:
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            if not _Watchdog.installed:
                # installed once: swapping handlers on every pause costs more than the pause
                signal.signal(signal.SIGALRM, self._fire)
                _Watchdog.installed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self.armed = True
        return self

    @staticmethod
    def _fire(signum: int, frame: object) -> None:
        raise StopTimeout()

    def __exit__(self, *exc: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)


def stop_world(pid: int, read_regs: bool = True, stop_timeout: float = 2.0) -> World:
    """Seize and interrupt every thread, catching threads created meanwhile, and wait for all.

    On any failure every thread already held is let go before the exception propagates.
    """
    world = World(pid)
    world.started = time.monotonic()
    try:
        with _Watchdog(stop_timeout):
            while True:
                # one listing per pass: threads cloned meanwhile by a thread we held were
                # attached by TRACECLONE (seize says EPERM for those), others are seized now
                pending: list[StoppedThread] = []
                for tid in list_threads(pid):
                    if tid in world.threads:
                        continue
                    st = StoppedThread(tid)
                    try:
                        fresh = seize(tid)
                    except PermissionProblem:
                        if not _is_traced_by_us(tid):
                            raise
                        world.threads[tid] = st  # auto-attached clone: its stop is coming
                        pending.append(st)
                        continue
                    if not fresh:
                        continue
                    try:
                        ptrace(PTRACE_INTERRUPT, tid)
                    except PtraceFailed as exc:
                        if exc.errno != errno.ESRCH:
                            raise
                        continue
                    world.threads[tid] = st
                    pending.append(st)
                if not pending:
                    break
                for st in pending:
                    if not wait_stop(st):
                        world.threads.pop(st.tid, None)
                    elif read_regs:
                        st.regs = get_regs(st.tid)
            if not world.threads:
                raise ProcessExited(f"process {pid} exited")
    except StopTimeout:
        resume_world(world)
        if process_gone(pid):
            raise ProcessExited(f"process {pid} exited") from None
        late = [t for t, st in world.threads.items() if not st.stopped]
        raise OpusError(
            f"threads {late[:5]} of process {pid} did not stop within {stop_timeout:g}s "
            "(uninterruptible sleep?); nothing was changed, retry later"
        ) from None
    except BaseException:
        resume_world(world)
        raise
    return world


def process_gone(pid: int) -> bool:
    """The process no longer runs: absent, or a zombie waiting to be reaped."""
    return _exiting(pid)


def _exiting(tid: int) -> bool:
    """A thread that is gone or dying (zombie/dead) cannot be seized: EPERM means that, here."""
    try:
        with open(f"/proc/{tid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X", "x")


def status_field(tid: int, name: str) -> str | None:
    """One field of /proc/TID/status (the text after `name:`), None if the thread is gone."""
    try:
        with open(f"/proc/{tid}/status") as f:
            for ln in f:
                if ln.startswith(name + ":"):
                    return ln[len(name) + 1 :].strip()
    except OSError:
        pass
    return None


def _is_traced_by_us(tid: int) -> bool:
    tracer = status_field(tid, "TracerPid")
    return tracer is not None and int(tracer) == os.getpid()


def detach_once_stopped(tid: int, keep_sigtrap: bool = True) -> bool:
    """A seized thread whose stop had not come yet: if it has stopped now, detach it, handing
    back a signal it stopped with (SIGTRAP only if `keep_sigtrap`). True when it needs nothing
    more from us (detached, or gone); False while it has not stopped."""
    try:
        got, status = os.waitpid(tid, WALL | os.WNOHANG)
    except ChildProcessError:
        return True
    if got == 0:
        return False
    if os.WIFSTOPPED(status):
        sig = os.WSTOPSIG(status) if (status >> 16) == 0 else 0
        detach(tid, sig if keep_sigtrap or sig != signal.SIGTRAP else 0)
    return True


def resume_world(world: World) -> None:
    """Detach every held thread, re-delivering any signal it received; a gone thread is fine.

    A thread seized but not yet stopped (an error path) cannot be detached until its interrupt
    stop arrives: wait a little for it, so that it is not left stopped behind us.
    """
    late = []
    for st in world.threads.values():
        if st.stopped:
            detach(st.tid, st.signal)
        else:
            late.append(st)
    world.resumed = time.monotonic()
    deadline = time.monotonic() + 2.0
    while late and time.monotonic() < deadline:
        late = [st for st in late if not detach_once_stopped(st.tid, keep_sigtrap=False)]
        if late:
            time.sleep(0.001)


def detach(tid: int, sig: int = 0) -> None:
    try:
        ptrace(PTRACE_DETACH, tid, 0, sig)
    except PtraceFailed as exc:
        if exc.errno not in (errno.ESRCH,):
            raise
