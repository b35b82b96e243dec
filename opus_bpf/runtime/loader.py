"""Map a patch object into the target without dlopen, and bind it.

dlopen in a process whose other threads we hold can deadlock on the malloc or loader lock; a
remote dlopen also runs constructors. The patch object is built without start files, TLS or
constructors, so loading it is only: open + mmap each PT_LOAD near the code it patches (so a
5-byte `jmp rel32` reaches it), zero its .bss, apply its dynamic relocations, and fill the
pointer slots through which its code reaches the target's own globals and functions. All of it
is remote system calls and /proc/PID/mem writes, done while the process keeps running.

One page after the object, the *patch record*, holds what this patch did (JSON), so that
`status` and `revert` read the truth from the process itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from opus_bpf.errors import InjectionError
from opus_bpf.runtime.linker import GlobalScope, required_versions
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.remote import BriefCaller, RemoteCaller
from opus_bpf.target.process import Mapping, read_maps

PAGE = os.sysconf("SC_PAGE_SIZE")
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x02, 0x10, 0x20, 0x100000
O_RDONLY, O_CLOEXEC, AT_FDCWD = 0, 0o2000000, -100
RECORD_MAGIC = b"OPUSREC1"
RECORD_SIZE = PAGE
RECORD_SCRATCH = 64  # the record page's last bytes: buffers for system calls made without a hold
GATE_PAGE_SIZE = PAGE  # activation gates (runtime/gate.py), right after the record page

R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE = 1, 6, 7, 8
SUPPORTED_RELOCS = {R_X86_64_64, R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_RELATIVE}


def _down(x: int) -> int:
    return x & ~(PAGE - 1)


def _up(x: int) -> int:
    return (x + PAGE - 1) & ~(PAGE - 1)


@dataclass
class PatchObject:
    """The patch shared object as a file: layout, relocations and local symbols."""

    path: str
    segments: list[tuple[int, int, int, int, int]]  # vaddr, offset, filesz, memsz, flags
    relocs: list[tuple[int, int, str | None, int, str | None]]  # offset, type, sym, addend, version
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (value, size)
    text: tuple[int, int] = (0, 0)

    @property
    def span(self) -> int:
        return _up(max(v + m for v, _o, _f, m, _fl in self.segments))


def read_patch_object(path: str) -> PatchObject:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        segs = [
            (p["p_vaddr"], p["p_offset"], p["p_filesz"], p["p_memsz"], p["p_flags"])
            for p in elf.iter_segments()
            if p["p_type"] == "PT_LOAD"
        ]
        if any(p["p_type"] == "PT_TLS" for p in elf.iter_segments()):
            raise InjectionError(f"{path} uses thread-local storage; patch objects cannot")
        dynsym = elf.get_section_by_name(".dynsym")
        versions = required_versions(elf)
        relocs = []
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection) or sec.name not in (".rela.dyn", ".rela.plt"):
                continue
            for r in sec.iter_relocations():
                idx = r["r_info_sym"]
                name = None
                if idx and isinstance(dynsym, SymbolTableSection):
                    sym = dynsym.get_symbol(idx)
                    name = sym.name
                    if sym["st_shndx"] != "SHN_UNDEF":
                        name = "@local:" + name  # defined in the patch object itself
                        relocs.append(
                            (
                                r["r_offset"],
                                r["r_info_type"],
                                name,
                                r["r_addend"],
                                str(sym["st_value"]),
                            )
                        )
                        continue
                relocs.append(
                    (r["r_offset"], r["r_info_type"], name, r["r_addend"], versions.get(idx))
                )
        syms: dict[str, tuple[int, int]] = {}
        symtab = elf.get_section_by_name(".symtab")
        if isinstance(symtab, SymbolTableSection):
            for s in symtab.iter_symbols():
                if (
                    s.name
                    and s["st_shndx"] != "SHN_UNDEF"
                    and s["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT")
                ):
                    syms.setdefault(s.name, (s["st_value"], s["st_size"]))
        xs = [(v, v + m) for v, _o, _f, m, fl in segs if fl & 1]
    po = PatchObject(path, segs, relocs, syms)
    if xs:
        po.text = (min(a for a, _ in xs), max(b for _, b in xs))
    for _off, typ, _n, _a, _v in relocs:
        if typ not in SUPPORTED_RELOCS:
            raise InjectionError(
                f"{path} has relocation type {typ}, which the loader does not support"
            )
    return po


def _free_gap_near(maps: list[Mapping], near: int, size: int) -> int:
    """A free, page-aligned address range within ±1.5 GiB of `near`, closest first."""
    limit = 3 << 29
    spans = sorted((m.start, m.end) for m in maps)
    cands = []
    prev_end = PAGE * 16
    for start, end in spans + [(1 << 47, 1 << 47)]:
        lo, hi = _up(prev_end) + PAGE, _down(start) - PAGE  # keep a guard page each side
        if hi - lo >= size:
            # the highest spot below `near` and the lowest above it
            for addr in (min(hi - size, _down(near)), max(lo, _up(near))):
                if lo <= addr <= hi - size and abs(addr - near) < limit:
                    cands.append(addr)
        prev_end = max(prev_end, end)
    if not cands:
        raise InjectionError("no free address range within ±1.5 GiB of the patched code")
    return min(cands, key=lambda a: abs(a - near))


@dataclass
class LoadedPatch:
    base: int
    span: int
    record: int  # address of the patch record page
    path: str
    holds: list[float] = field(default_factory=list)  # per remote call, when held one by one


def load(
    pid: int,
    mem: ProcessMemory,
    po: PatchObject,
    near: int,
    bindings: dict[str, int],
    caller: RemoteCaller | None = None,
    tid: int | None = None,
) -> LoadedPatch:
    """Map and bind the patch object; on failure unmap what was mapped and re-raise."""
    maps = read_maps(pid)
    scope = GlobalScope(pid, maps)
    # resolve every symbol before a thread is held for the remote calls: reading the libraries'
    # symbol tables takes seconds on a loaded machine, and a single-threaded server (an nginx
    # worker) serves nothing while its thread is stopped
    resolved = {
        (name, ver): scope.resolve(name, ver)
        for _off, typ, name, _addend, ver in po.relocs
        if typ != R_X86_64_RELATIVE and name and not name.startswith("@local:")
    }
    own = caller is None
    # given a thread (per-thread mode), each remote call holds it alone and briefly
    rc = caller or (BriefCaller(pid, mem, tid) if tid is not None else RemoteCaller(pid, mem))
    base = None
    total = po.span + RECORD_SIZE + GATE_PAGE_SIZE
    try:
        path_addr = rc.write_string(po.path)
        fd = rc.check("openat", rc.call("openat", AT_FDCWD, path_addr, O_RDONLY | O_CLOEXEC, 0))
        try:
            for _ in range(4):
                want = _free_gap_near(maps, near, total)
                res = rc.call(
                    "mmap", want, total, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0
                )
                if res == want:
                    base = want
                    break
                if res >= 0:
                    rc.call("munmap", res, total)
                maps = read_maps(pid)
            if base is None:
                raise InjectionError("could not reserve address space near the patched code")
            for vaddr, offset, filesz, memsz, flags in po.segments:
                prot = (
                    (PROT_READ if flags & 4 else 0)
                    | (PROT_WRITE if flags & 2 else 0)
                    | (PROT_EXEC if flags & 1 else 0)
                )
                start = base + _down(vaddr)
                file_end = base + vaddr + filesz
                length = _up(vaddr + filesz) - _down(vaddr)
                if filesz:
                    rc.check(
                        "mmap",
                        rc.call(
                            "mmap",
                            start,
                            length,
                            prot | PROT_WRITE if memsz > filesz else prot,
                            MAP_PRIVATE | MAP_FIXED,
                            fd,
                            _down(offset),
                        ),
                    )
                if memsz > filesz:
                    tail = _up(file_end) - file_end if filesz else 0
                    if tail:
                        mem.write(file_end, b"\0" * tail)
                    anon_start = _up(file_end) if filesz else start
                    anon_end = _up(base + vaddr + memsz)
                    if anon_end > anon_start:
                        rc.check(
                            "mmap",
                            rc.call(
                                "mmap",
                                anon_start,
                                anon_end - anon_start,
                                prot,
                                MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
                                -1,
                                0,
                            ),
                        )
            rc.check(
                "mmap",
                rc.call(
                    "mmap",
                    base + po.span,
                    RECORD_SIZE,
                    PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
                    -1,
                    0,
                ),
            )
            rc.check(
                "mmap",
                rc.call(
                    "mmap",
                    base + po.span + RECORD_SIZE,
                    GATE_PAGE_SIZE,
                    PROT_READ | PROT_EXEC,
                    MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
                    -1,
                    0,
                ),
            )
        finally:
            rc.call("close", fd)
        _relocate(mem, po, base, resolved, bindings)
        holds = rc.holds if isinstance(rc, BriefCaller) else []
        return LoadedPatch(base, po.span, base + po.span, po.path, holds)
    except BaseException:
        if base is not None:
            # best effort: the mapping is unused either way
            with contextlib.suppress(Exception):
                rc.call("munmap", base, total)
        raise
    finally:
        if own:
            rc.close()


def _relocate(
    mem: ProcessMemory,
    po: PatchObject,
    base: int,
    resolved: dict[tuple[str, str | None], int],
    bindings: dict[str, int],
) -> None:
    for off, typ, name, addend, ver in po.relocs:
        if typ == R_X86_64_RELATIVE:
            val = base + addend
        elif name and name.startswith("@local:"):
            val = base + int(ver or 0) + (addend if typ == R_X86_64_64 else 0)
        else:
            assert name is not None
            val = resolved[(name, ver)] + (addend if typ == R_X86_64_64 else 0)
        mem.write(base + off, struct.pack("<Q", val & 0xFFFFFFFFFFFFFFFF))
    for slot, target in bindings.items():
        if slot not in po.symbols:
            raise InjectionError(f"patch object has no slot {slot}; the bundle is inconsistent")
        mem.write(base + po.symbols[slot][0], struct.pack("<Q", target))


def write_record(mem: ProcessMemory, record_addr: int, record: dict) -> None:
    data = json.dumps(record, separators=(",", ":")).encode()
    if len(data) + 12 > RECORD_SIZE - RECORD_SCRATCH:
        raise InjectionError("patch record too large")
    mem.write(record_addr, RECORD_MAGIC + struct.pack("<I", len(data)) + data)


def read_record(mem: ProcessMemory, record_addr: int) -> dict | None:
    try:
        head = mem.read(record_addr, 12)
    except OSError:
        return None
    if len(head) < 12 or head[:8] != RECORD_MAGIC:
        return None
    (n,) = struct.unpack("<I", head[8:12])
    try:
        return json.loads(mem.read(record_addr + 12, n))
    except (OSError, ValueError):
        return None


def unload(rc: RemoteCaller, base: int, span: int) -> None:
    rc.check("munmap", rc.call("munmap", base, span + RECORD_SIZE + GATE_PAGE_SIZE))
