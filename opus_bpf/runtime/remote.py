"""Remote system calls in a target thread through a self-restoring stub.

The stub is 29 bytes written into the never-executed padding after an executable segment:

    syscall                      ; the call we inject
    pop r15 ... pop rdi          ; 15 general registers of the thread's continuation
    popfq                        ; its flags
    ret 128                      ; its rip, and rsp back above the red zone

Before a call the thread's continuation (its registers, with an interrupted system call already
turned into its restart the way the kernel would: rip - 2, rax = orig_rax, or restart_syscall)
is pushed below the red zone of its own stack and the thread is pointed at the stub. We regain
control at the syscall-exit stop (PTRACE_SYSCALL with TRACESYSGOOD), read the result, and either
inject the next call or let the thread go: it then runs the rest of the stub and resumes exactly
where it was. If opus-bpf dies at any instant, the kernel detaches the thread and it finishes the
stub by itself: the worst outcome is one harmless mapping left in the process. Nothing in the
target's libc runs, so a lock another thread holds (malloc, the loader) cannot deadlock us.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from dataclasses import dataclass

from opus_bpf.errors import InjectionError, ProcessExited
from opus_bpf.runtime import threads as T
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.target.elf import load_elf
from opus_bpf.target.process import Mapping, load_bias, mapped_objects, read_maps

STUB = bytes.fromhex(
    "0f05"  # syscall
    "415f415e415d415c5d5b415b415a41594158"  # pop r15 r14 r13 r12 rbp rbx r11 r10 r9 r8
    "58595a5e5f"  # pop rax rcx rdx rsi rdi
    "9d"  # popfq
    "c28000"  # ret 128
)
STUB_TAG = b"OPUS-BPF-STUB-1\0"
RED_ZONE = 128
CONT_ORDER = (
    "r15",
    "r14",
    "r13",
    "r12",
    "rbp",
    "rbx",
    "r11",
    "r10",
    "r9",
    "r8",
    "rax",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "eflags",
    "rip",
)
BLOCK_SIZE = 8 * len(CONT_ORDER)
SCRATCH = 1024  # bytes below the block for strings passed to syscalls

ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
NR_restart_syscall = 219
NO_SYSCALL = (1 << 64) - 1

SYS = {
    "mmap": 9,
    "mprotect": 10,
    "munmap": 11,
    "close": 3,
    "openat": 257,
    "prctl": 157,
    "rt_sigaction": 13,
}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def continuation(regs: T.Regs) -> T.Regs:
    """The registers the thread must resume with, with a pending syscall restart made explicit.

    When a thread is stopped inside an interrupted system call the kernel would, on resume,
    either restart it (rip -= 2, rax = orig_rax) or run restart_syscall. We perform that
    transformation ourselves so the stub can resume the thread with plain registers.
    """
    cont = T.copy_regs(regs)
    if _signed(regs.orig_rax) >= 0:
        ret = -_signed(regs.rax)
        if ret in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            cont.rax = regs.orig_rax
            cont.rip = regs.rip - 2
        elif ret == ERESTART_RESTARTBLOCK:
            cont.rax = NR_restart_syscall
            cont.rip = regs.rip - 2
    cont.orig_rax = NO_SYSCALL
    return cont


def find_stub(pid: int, mem: ProcessMemory, maps: list[Mapping] | None = None) -> int:
    """Address of the stub in this process, writing it into segment padding if not there yet.

    The padding between the end of an executable PT_LOAD and the end of its page is mapped
    executable but is not part of any section: no code of the program runs there.
    """
    maps = maps or read_maps(pid)
    page = os.sysconf("SC_PAGE_SIZE")
    need = len(STUB) + len(STUB_TAG)
    by_path = mapped_objects(pid, maps)
    exe = os.readlink(f"/proc/{pid}/exe")
    order = sorted(by_path, key=lambda p: (p != exe, "libc.so" not in p, p))
    for path in order:
        xmaps = [m for m in by_path[path] if "x" in m.perms]
        if not xmaps:
            continue
        try:
            image = load_elf(path, need_symtab=False)
        except Exception:  # noqa: BLE001 - any unreadable object is just not a candidate
            continue
        try:
            bias = load_bias(image, by_path[path])
        except Exception:  # noqa: BLE001 - its first segment is not mapped: not a candidate
            continue
        for seg in image.segments:
            if not seg.flags & 1:
                continue
            end = bias + seg.vaddr + seg.filesz
            page_end = (end + page - 1) & ~(page - 1)
            start = (end + 15) & ~15
            if page_end - start < need or not any(
                m.contains(start) and m.contains(page_end - 1) for m in xmaps
            ):
                continue
            cur = mem.read(start, need)
            if cur == STUB + STUB_TAG:
                return start
            if cur == b"\0" * need:
                mem.write(start, STUB + STUB_TAG)
                if mem.read(start, need) == STUB + STUB_TAG:
                    return start
    raise InjectionError(
        f"no room for the syscall stub in any executable mapping of process {pid}; "
        "nothing was changed"
    )


@dataclass
class HeldThread:
    """One thread seized for remote calls, with its continuation pushed on its stack."""

    tid: int
    regs: T.Regs  # as stopped
    block: int  # address of the continuation block
    stub: int
    signals: list[int]
    primed: bool = False
    since: float = 0.0  # monotonic time it stopped: how long we hold it is an apply figure


class RemoteCaller:
    """Run system calls inside one thread of the target; `close()` lets the thread go."""

    def __init__(self, pid: int, mem: ProcessMemory, tid: int | None = None) -> None:
        self.pid = pid
        self.mem = mem
        self.stub = find_stub(pid, mem)
        self.thread = self._hold(tid or pid)

    def _hold(self, tid: int) -> HeldThread:
        if not T.seize(tid):
            raise ProcessExited(f"thread {tid} of process {self.pid} exited")
        st = T.StoppedThread(tid)
        T.ptrace(T.PTRACE_INTERRUPT, tid)
        if not T.wait_stop(st):
            raise ProcessExited(f"process {self.pid} exited")
        since = time.monotonic()
        regs = T.get_regs(tid)
        status = _thread_features(tid)
        if "shstk" in status:
            T.detach(tid, st.signal)
            raise InjectionError(f"thread {tid} runs with a shadow stack (CET); not supported yet")
        cont = continuation(regs)
        block = cont.rsp - RED_ZONE - BLOCK_SIZE
        held = HeldThread(
            tid, regs, block, self.stub, [st.signal] if st.signal else [], since=since
        )
        try:
            self.mem.write(block, struct.pack("<17Q", *(getattr(cont, r) for r in CONT_ORDER)))
        except BaseException:
            T.detach(tid, st.signal)
            raise
        return held

    @property
    def scratch(self) -> int:
        return self.thread.block - SCRATCH

    def _prime(self, name: str, args: tuple[int, ...]) -> None:
        """Point the held thread at the stub, set up to make system call `name`."""
        h = self.thread
        inj = T.copy_regs(h.regs)
        inj.rip = h.stub
        inj.rsp = h.block
        inj.rax = SYS[name]
        inj.orig_rax = NO_SYSCALL
        for reg, val in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            setattr(inj, reg, val & 0xFFFFFFFFFFFFFFFF)
        T.set_regs(h.tid, inj)
        h.primed = True

    def call(self, name: str, *args: int) -> int:
        """One system call in the held thread; the raw result (negative errno on failure)."""
        h = self.thread
        self._prime(name, args)
        self._until_syscall_stop()  # entry
        self._until_syscall_stop()  # exit
        out = T.get_regs(h.tid)
        if out.rip != h.stub + 2:
            raise InjectionError(
                f"remote {name} in thread {h.tid} stopped at {out.rip:#x}, not after the stub"
            )
        return _signed(out.rax)

    def launch(self, name: str, *args: int) -> None:
        """Point the held thread at one system call and let it go: it makes the call when it
        next gets a CPU, restores itself and carries on. Only the stop is a hold; the result
        must be observable in memory (the caller waits for it there)."""
        self._prime(name, args)
        self.close()

    def _until_syscall_stop(self) -> None:
        h = self.thread
        T.ptrace(T.PTRACE_SYSCALL, h.tid, 0, 0)
        while True:
            try:
                _, status = os.waitpid(h.tid, T.WALL)
            except ChildProcessError as exc:
                raise ProcessExited(f"process {self.pid} exited during a remote call") from exc
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                raise ProcessExited(f"process {self.pid} exited during a remote call")
            sig = os.WSTOPSIG(status)
            if sig == (signal.SIGTRAP | 0x80):
                return
            if (status >> 16) == 0 and sig != signal.SIGTRAP:
                h.signals.append(sig)  # a real signal: hand it back when we let go
            T.ptrace(T.PTRACE_SYSCALL, h.tid, 0, 0)

    def write_string(self, s: str) -> int:
        data = s.encode() + b"\0"
        if len(data) > SCRATCH - 16:
            raise InjectionError(f"path too long for the remote scratch area: {s}")
        self.mem.write(self.scratch, data)
        return self.scratch

    def close(self) -> None:
        """Let the thread go: it runs the rest of the stub (restoring itself) and carries on."""
        h = self.thread
        # Never primed: it is where it stopped. Primed: at the exit stop it sits after the
        # stub's syscall with rsp at the block, and detaching lets it restore its continuation.
        T.detach(h.tid, h.signals[0] if h.signals else 0)

    def check(self, name: str, res: int) -> int:
        if res < 0:
            raise InjectionError(f"remote {name} failed in process {self.pid}: {os.strerror(-res)}")
        return res


def _thread_features(tid: int) -> str:
    return T.status_field(tid, "x86_Thread_features") or ""


_STRING = 0x7FFF_0BAD_0000_0000  # stands for "the string given to write_string" in call()


class BriefCaller:
    """RemoteCaller's interface with one hold per system call: between two calls the thread
    runs on, so the longest hold is one call's, not a whole load's (per-thread mode)."""

    def __init__(self, pid: int, mem: ProcessMemory, tid: int | None = None) -> None:
        self.pid, self.mem, self.tid = pid, mem, tid
        self.holds: list[float] = []
        self._string: str | None = None

    def write_string(self, s: str) -> int:
        self._string = s
        return _STRING

    def call(self, name: str, *args: int) -> int:
        rc = RemoteCaller(self.pid, self.mem, self.tid)
        try:
            if _STRING in args and self._string is not None:
                addr = rc.write_string(self._string)
                args = tuple(addr if a == _STRING else a for a in args)
            return rc.call(name, *args)
        finally:
            rc.close()
            self.holds.append(time.monotonic() - rc.thread.since)

    check = RemoteCaller.check

    def close(self) -> None:
        """Nothing is held between calls."""
