"""Entry jumps: the bytes at an old function's entry that send every new call to the new one."""

from __future__ import annotations

import struct

from opus_bpf.errors import SymbolProblem

JMP_REL32_SIZE = 5
JMP_ABS_SIZE = 14  # ff 25 00000000 <abs64>


def encode_jump(src: int, dst: int, room: int) -> bytes:
    """`jmp rel32` when dst is within ±2 GiB of src, else the 14-byte absolute `jmp [rip+0]`.

    `room` is the size of the old function: a jump longer than it would overwrite the next one.
    """
    rel = dst - (src + JMP_REL32_SIZE)
    if -(1 << 31) <= rel < (1 << 31):
        if room < JMP_REL32_SIZE:
            raise SymbolProblem(
                f"function at {src:#x} is {room} bytes long, too short for a "
                f"{JMP_REL32_SIZE}-byte jump"
            )
        return b"\xe9" + struct.pack("<i", rel)
    if room < JMP_ABS_SIZE:
        raise SymbolProblem(
            f"function at {src:#x} is {room} bytes long and its replacement is out of rel32 reach; "
            f"an absolute jump needs {JMP_ABS_SIZE} bytes"
        )
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", dst)


def decode_jump(src: int, code: bytes) -> int | None:
    """Where a jump written by `encode_jump` at `src` goes, or None if `code` is not one."""
    if len(code) >= 5 and code[0] == 0xE9:
        return src + 5 + struct.unpack("<i", code[1:5])[0]
    if len(code) >= 14 and code[:6] == b"\xff\x25\x00\x00\x00\x00":
        return struct.unpack("<Q", code[6:14])[0]
    return None
