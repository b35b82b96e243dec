"""The SIGTRAP handler placed in the target while a trap byte sits at an old entry.

The per-thread apply (runtime/perthread.py) sends new calls to the new code by writing one
`int3` at each old entry. A trap with no one to answer it would kill the process (SIGTRAP's
default action), and a tracer answering each one through ptrace is both too slow for a hot
function and gone if it is killed. So the target answers its own traps: this handler, installed
before the first trap byte and removed only after the last one is gone (and no trap is still
queued), moves the trapping thread to the new function in its own signal frame. A trap byte is
never armed unless something in the target can handle it.

Layout in the patch's gate page, at TRAP_OFFSET (read and executed by the target, written by us
through /proc/PID/mem):

    +0x000  handler(sig, info, uc)
              rip = uc->uc_mcontext.gregs[REG_RIP]
              for (trap, dest) in table:
                  rip == trap + 1 -> gregs[REG_RIP] = dest; return   (a call at an old entry)
                  rip == dest     -> return   (already there: nothing to do)
              not ours: previous handler a function -> jump to it (same arguments);
                        SIG_IGN -> return; SIG_DFL -> put it back and raise SIGTRAP again, so
                        the default action happens as it would have without us
    +0x0f0  restorer: rt_sigreturn
    +0x100  the previous kernel sigaction (32 bytes), as rt_sigaction returned it
    +0x120  table: count, then (trap address, destination) pairs
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from opus_bpf.errors import InjectionError
from opus_bpf.runtime.failpoints import failpoint
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.remote import RemoteCaller

TRAP_OFFSET = 2048  # in the gate page; activation gates use the first half
HANDLER = bytes.fromhex(
    "488b82a8000000"  # mov rax, [rdx+168]         ; the interrupted rip
    "488d0d12010000"  # lea rcx, [rip+table]
    "4c8b01"  # mov r8, [rcx]                       ; count
    "4883c108"  # add rcx, 8
    "4d85c0"  # loop: test r8, r8
    "7420"  # jz not_ours
    "483b01"  # cmp rax, [rcx]                      ; trap + 1 (entry just executed)
    "740f"  # je hit
    "483b4108"  # cmp rax, [rcx+8]                 ; already at the destination
    "7414"  # je done
    "4883c110"  # add rcx, 16
    "49ffc8"  # dec r8
    "ebe7"  # jmp loop
    "488b4108"  # hit: mov rax, [rcx+8]
    "488982a8000000"  # mov [rdx+168], rax
    "c3"  # done: ret
    "488b05bf000000"  # not_ours: mov rax, [rip+old_action]
    "4883f801"  # cmp rax, 1                         ; SIG_IGN
    "74f2"  # je done
    "773e"  # ja chain                              ; a handler function
    "b80d000000"  # mov eax, rt_sigaction           ; SIG_DFL: put it back ...
    "bf05000000"  # mov edi, SIGTRAP
    "488d35a6000000"  # lea rsi, [rip+old_action]
    "31d2"  # xor edx, edx
    "41ba08000000"  # mov r10d, 8
    "0f05"  # syscall
    "b827000000"  # mov eax, getpid                  ; ... and raise it again
    "0f05"  # syscall
    "4189c1"  # mov r9d, eax
    "b8ba000000"  # mov eax, gettid
    "0f05"  # syscall
    "89c6"  # mov esi, eax
    "4489cf"  # mov edi, r9d
    "ba05000000"  # mov edx, SIGTRAP
    "b8ea000000"  # mov eax, tgkill
    "0f05"  # syscall
    "c3"  # ret
    "ffe0"  # chain: jmp rax
)
RESTORER_OFF = 0xF0
RESTORER = bytes.fromhex("b80f0000000f05")  # mov eax, rt_sigreturn; syscall
OLD_ACTION_OFF = 0x100
TABLE_OFF = 0x120
AREA_SIZE = 2048
MAX_TRAPS = (AREA_SIZE - TABLE_OFF - 8) // 16

SIGTRAP = 5
SA_SIGINFO = 0x4
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
KEEP_FLAGS = SA_ONSTACK | SA_RESTART | SA_NODEFER
SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (x86-64 kernel sigaction)


@dataclass(frozen=True)
class KernelSigaction:
    handler: int
    flags: int
    restorer: int
    mask: int

    def pack(self) -> bytes:
        return SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, data: bytes) -> KernelSigaction:
        return cls(*SIGACTION.unpack(data[: SIGACTION.size]))


def write_area(mem: ProcessMemory, area: int, traps: dict[int, int]) -> None:
    """Write the handler and its table (trap address -> destination); the previous action slot
    is left as it is: it belongs to whoever installed the handler."""
    if len(traps) > MAX_TRAPS:
        raise InjectionError(f"too many functions for one per-thread switch ({len(traps)})")
    mem.write(area, HANDLER)
    mem.write(area + RESTORER_OFF, RESTORER)
    table = struct.pack("<Q", len(traps)) + b"".join(
        struct.pack("<QQ", trap + 1, dest) for trap, dest in sorted(traps.items())
    )
    mem.write(area + TABLE_OFF, table)


def _current(rc: RemoteCaller) -> KernelSigaction:
    out = rc.scratch + 512
    rc.check("rt_sigaction", rc.call("rt_sigaction", SIGTRAP, 0, out, 8))
    return KernelSigaction.unpack(rc.mem.read(out, SIGACTION.size))


def _exchange(rc: RemoteCaller, new: KernelSigaction) -> KernelSigaction:
    """Set the SIGTRAP action and return the one it replaced: one remote call."""
    buf, out = rc.scratch + 256, rc.scratch + 512
    rc.mem.write(buf, new.pack())
    rc.check("rt_sigaction", rc.call("rt_sigaction", SIGTRAP, buf, out, 8))
    return KernelSigaction.unpack(rc.mem.read(out, SIGACTION.size))


def _ours(area: int, old: KernelSigaction) -> KernelSigaction:
    # SA_NODEFER: SIGTRAP stays unblocked while the handler runs, so a thread's mask shows
    # only what the program itself blocks (a thread that traps with SIGTRAP blocked is killed)
    flags = (old.flags & KEEP_FLAGS) | SA_SIGINFO | SA_RESTORER | SA_NODEFER
    return KernelSigaction(area, flags, area + RESTORER_OFF, old.mask)


def install(rc: RemoteCaller, area: int, default: bool = True) -> bool:
    """Make the handler at `area` the process's SIGTRAP action, keeping the previous one for
    chaining and for `uninstall_launched`. True when it was installed now, False when it was there
    already (left by an earlier run that was stopped: the previous action it saved stays).

    `default`: /proc says the action is SIG_DFL (neither caught nor ignored), the common case,
    so one exchange does it; otherwise (or if the guess was wrong) a second call fixes it up.
    """
    stored = KernelSigaction.unpack(rc.mem.read(area + OLD_ACTION_OFF, SIGACTION.size))
    guess = KernelSigaction(0, 0, 0, 0) if default else _current(rc)
    if guess.handler == area:
        guess = stored
    failpoint("traphandler:install")  # a thread is held inside a remote call here
    was = _exchange(rc, _ours(area, guess))
    fresh = was.handler != area
    old = was if fresh else stored
    if fresh:
        rc.mem.write(area + OLD_ACTION_OFF, was.pack())
    if old != guess:
        _exchange(rc, _ours(area, old))  # flags and mask as the program had them
    return fresh


SENTINEL = b"\xa5" * SIGACTION.size  # no sigaction the kernel returns looks like this


def _launched_exchange(
    pid: int, mem: ProcessMemory, tid: int, act: int, out: int, timeout: float
) -> tuple[KernelSigaction | None, float]:
    """rt_sigaction(SIGTRAP, act, out) made by a thread we only stop to point it at the call:
    it runs the call when the scheduler gives it a CPU, not while we hold it. `out` (in a page
    of ours, not the thread's stack) shows when it is done. Returns (the replaced action or
    None if it never showed, the hold)."""
    mem.write(out, SENTINEL)
    rc = RemoteCaller(pid, mem, tid)
    rc.launch("rt_sigaction", SIGTRAP, act, out, 8)
    hold = time.monotonic() - rc.thread.since
    failpoint("traphandler:launched")  # the call is the thread's own now, done or not
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = mem.read(out, SIGACTION.size)
        if got != SENTINEL:
            return KernelSigaction.unpack(got), hold
        time.sleep(0.0001)
    return None, hold


def install_launched(
    pid: int, mem: ProcessMemory, tid: int, area: int, scratch: int, timeout: float = 10.0
) -> tuple[bool | None, list[float]]:
    """install(), with the thread held only to point it at the call (the action was SIG_DFL,
    as /proc said). Returns (fresh, holds); fresh None: the call never showed its result
    (nothing may be armed), or the guess was wrong and a held call fixed it up."""
    guess = KernelSigaction(0, 0, 0, 0)
    mem.write(area + OLD_ACTION_OFF, guess.pack())  # right for chaining from the first trap
    mem.write(scratch, _ours(area, guess).pack())
    was, hold = _launched_exchange(pid, mem, tid, scratch, scratch + SIGACTION.size, timeout)
    if was is None:
        return None, [hold]
    if was == guess:
        return True, [hold]
    # the program changed its action meanwhile, or it was ours already: fix up while held
    rc = RemoteCaller(pid, mem, tid)
    try:
        if was.handler == area:
            stored = KernelSigaction.unpack(mem.read(area + OLD_ACTION_OFF, SIGACTION.size))
            _exchange(rc, _ours(area, stored))
            return False, [hold]
        mem.write(area + OLD_ACTION_OFF, was.pack())
        _exchange(rc, _ours(area, was))
        return True, [hold]
    finally:
        rc.close()


def uninstall_launched(
    pid: int, mem: ProcessMemory, tid: int, area: int, scratch: int, timeout: float = 10.0
) -> tuple[bool | None, list[float]]:
    """Give the process its previous SIGTRAP action back, by a launched call; if the program
    had replaced ours meanwhile, its own is put back while held."""
    was, hold = _launched_exchange(
        pid, mem, tid, area + OLD_ACTION_OFF, scratch + SIGACTION.size, timeout
    )
    if was is None:
        return None, [hold]
    if was.handler == area:
        return True, [hold]
    rc = RemoteCaller(pid, mem, tid)
    try:
        _exchange(rc, was)
    finally:
        rc.close()
    return False, [hold]
