"""Activation gates: switch every function of a patch at once, even if opus-bpf dies mid-way.

A patch that replaces several functions needs one jump per old entry. Written one after the
other, a SIGKILL of opus-bpf between two writes would leave some callers on new code and others
on old. So each old entry is first pointed at a *gate* in a page next to the patch object:

    gate_i: cmpb  $0, flag(%rip)      ; the flag is byte 0 of the gate page
            jne   new_i               ; set: the new function
            <displaced instructions>  ; clear: the old entry's first instructions, relocated,
            jmp   old_i + n           ;        then the rest of the old function

While the flag is clear, an entry routed through its gate behaves exactly as the old function.
Then one byte (atomic) turns the flag on and every function switches at once; only then are the
entries rewritten as direct jumps to the new functions (each of those writes changes nothing
observable). Reverting runs the same steps backwards. Instructions that cannot be displaced
(relative branches, a branch into the displaced bytes) make a function ungateable; the patch is
then activated with plain jumps, one `pwrite` each, as before.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass

from opus_bpf.runtime.redirect import decode_jump

GATE_SIZE = 64
FLAG_OFFSET = 0
FIRST_GATE = 16

_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*(.*)$")
_BRANCH = re.compile(r"^(?:bnd |notrack )?(j[a-z]+|call[a-z]*|loop[a-z]*|ret[a-z]*|xbegin)\b")
_TARGET = re.compile(r"^(?:bnd |notrack )?(?:j[a-z]+|call[a-z]*|loop[a-z]*|xbegin)\s+([0-9a-f]+)\b")
_RIP_TARGET = re.compile(r"#\s*([0-9a-f]+)")


@dataclass(frozen=True)
class Insn:
    addr: int
    raw: bytes
    text: str


def disassemble(path: str, start: int, end: int) -> list[Insn]:
    """Instructions of [start, end) in an ELF file (link-time addresses), via binutils objdump."""
    out = subprocess.run(
        ["objdump", "-d", "-w", f"--start-address={start:#x}", f"--stop-address={end:#x}", path],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    insns = []
    for ln in out.splitlines():
        m = _LINE.match(ln)
        if m:
            insns.append(
                Insn(
                    int(m.group(1), 16),
                    bytes.fromhex(m.group(2).replace(" ", "")),
                    m.group(3).strip(),
                )
            )
    return insns


def displaced(path: str, start: int, pieces: list[tuple[int, int]]) -> list[Insn] | None:
    """The whole instructions covering the first 5 bytes at `start`, if they can run elsewhere.

    None when one of them is a branch, or when any branch of the function (all its pieces)
    lands inside them: after the entry is overwritten such a branch would land mid-jump.
    """
    body = [i for lo, hi in pieces for i in disassemble(path, lo, hi)]
    head: list[Insn] = []
    for i in body:
        if i.addr < start:
            continue
        if sum(len(x.raw) for x in head) >= 5:
            break
        head.append(i)
    n = sum(len(x.raw) for x in head)
    if n < 5 or any(_BRANCH.match(i.text) for i in head):
        return None
    for i in body:
        m = _TARGET.match(i.text)
        if m and start < int(m.group(1), 16) < start + n:
            return None
    return head


def relocate(insn: Insn, new_addr: int, bias: int = 0) -> bytes | None:
    """The instruction's bytes when placed at runtime address new_addr (RIP-relative
    displacement adjusted); `insn` has link-time addresses, `bias` maps them to runtime."""
    if "(%rip)" not in insn.text:
        return insn.raw
    m = _RIP_TARGET.search(insn.text)
    if not m:
        return None
    target = int(m.group(1), 16)
    end = insn.addr + len(insn.raw)
    old_disp = struct.pack("<i", target - end)
    if insn.raw.count(old_disp) != 1:
        return None  # cannot tell where the displacement sits
    new = bias + target - (new_addr + len(insn.raw))
    if not -(1 << 31) <= new < (1 << 31):
        return None
    i = insn.raw.index(old_disp)
    return insn.raw[:i] + struct.pack("<i", new) + insn.raw[i + 4 :]


def gate_code(
    gate: int, flag: int, new: int, bias: int, head: list[Insn] | None, resume: int
) -> bytes | None:
    """Machine code of one gate at address `gate` (see the module docstring).

    `head` are the displaced instructions at link-time addresses (bias maps them to runtime),
    `resume` where the old path continues: old entry + len(head), or, for an entry that already
    jumps to an earlier patch, that patch's function (head is then None).
    """
    code = bytearray()
    # cmpb $0, flag(%rip): 80 3d <disp32> 00  (7 bytes, disp from the end of the insn)
    code += b"\x80\x3d" + struct.pack("<i", flag - (gate + 7)) + b"\x00"
    # jne new: 0f 85 <rel32>
    code += b"\x0f\x85" + struct.pack("<i", new - (gate + len(code) + 6))
    for insn in head or []:
        rel = relocate(insn, gate + len(code), bias)
        if rel is None:
            return None
        code += rel
    code += b"\xe9" + struct.pack("<i", resume - (gate + len(code) + 5))
    return bytes(code) if len(code) <= GATE_SIZE else None


def gate_target(entry: int, code: bytes, gate_page: int) -> bool:
    """Does the jump at `entry` lead into this gate page?"""
    dest = decode_jump(entry, code)
    return dest is not None and gate_page <= dest < gate_page + 4096
