"""An ELF file on disk, known by build-id: symbols, functions by (name, source file), debug file.

The runtime never trusts a name alone: a static function is identified by its name plus the
source file whose STT_FILE group holds it in `.symtab`, and a stripped binary is read through the
separate debug file that carries the same build-id.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection

from opus_bpf.errors import DebugInfoMissing, SymbolProblem

DEBUG_ROOTS = ("/usr/lib/debug",)


@dataclass(frozen=True)
class Symbol:
    """One `.symtab`/`.dynsym` entry, with the source file of its STT_FILE group for locals."""

    name: str
    value: int
    size: int
    kind: str  # FUNC, OBJECT, ...
    bind: str  # LOCAL, GLOBAL, WEAK
    file: str | None  # STT_FILE group (basename as the compiler wrote it) for LOCAL symbols
    section_index: int | str


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int  # PF_X=1, PF_W=2, PF_R=4
    align: int


@dataclass
class ElfImage:
    """What the runtime needs of one ELF object: identity, layout and symbols."""

    path: str
    build_id: str | None
    elf_type: str  # ET_EXEC or ET_DYN
    segments: list[Segment]
    symbols: list[Symbol]
    debug_path: str | None = None
    debuglink: str | None = None
    _by_name: dict[str, list[Symbol]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for s in self.symbols:
            self._by_name.setdefault(s.name, []).append(s)

    def lookup(self, name: str) -> list[Symbol]:
        return self._by_name.get(name, [])

    def function(self, name: str, file: str | None = None, static: bool = False) -> Symbol:
        """The one function symbol called `name` (in `file` when static); else a clear error."""
        cands = [
            s for s in self.lookup(name) if s.kind == "FUNC" and s.section_index != "SHN_UNDEF"
        ]
        if static and file:
            base = os.path.basename(file)
            in_file = [s for s in cands if s.file and os.path.basename(s.file) == base]
            if in_file:
                cands = in_file
        elif not static:
            glob = [s for s in cands if s.bind != "LOCAL"]
            cands = glob or cands
        if not cands:
            raise SymbolProblem(
                f"function {name} has no symbol in {self.path}: it was inlined or removed by the "
                "compiler; patch the functions it was inlined into instead"
            )
        if len({s.value for s in cands}) > 1:
            where = ", ".join(sorted({s.file or "?" for s in cands}))
            raise SymbolProblem(
                f"function {name} is ambiguous in {self.path} (defined in {where}); "
                "the bundle must name its source file"
            )
        return cands[0]

    def function_pieces(self, sym: Symbol) -> list[tuple[int, int]]:
        """Address ranges of a function: its symbol plus compiler-split parts (`name.cold`, ...).

        A thread whose PC or return address is in `fn.cold` is inside `fn`.
        """
        ranges = [(sym.value, sym.value + max(sym.size, 1))]
        for suffix in (".cold", ".part", ".isra", ".constprop"):
            for s in self.symbols:
                if s.kind == "FUNC" and s.name.startswith(sym.name + suffix):
                    same_file = (s.file == sym.file) or sym.bind != "LOCAL"
                    if same_file and s.value and s.section_index != "SHN_UNDEF":
                        ranges.append((s.value, s.value + max(s.size, 1)))
        return ranges

    def data_object(
        self,
        name: str,
        file: str | None,
        binding: str,
        function: str | None,
        target_symbol: str | None = None,
    ) -> Symbol:
        """Resolve a variable the patch binds to: global, static (name+file), or local static.

        A hidden global is LOCAL once linked, listed after an empty STT_FILE entry: it still
        counts as the global. `target_symbol` (e.g. `calls.1`, chosen by the build from DWARF
        when a file has several local statics of one name) settles ambiguity.
        """
        base = os.path.basename(file) if file else None
        objs = [s for s in self.symbols if s.section_index != "SHN_UNDEF"]
        if binding == "global":
            defined = [s for s in self.lookup(name) if s.section_index != "SHN_UNDEF"]
            cands = [s for s in defined if s.bind != "LOCAL"] or [
                s
                for s in defined
                if not s.file  # hidden visibility, made local by the linker
            ]
        elif binding == "static":
            cands = [
                s
                for s in self.lookup(name)
                if s.bind == "LOCAL"
                and s.section_index != "SHN_UNDEF"
                and (base is None or (s.file and os.path.basename(s.file) == base))
            ]
        elif binding == "local-static":
            prefix = name + "."
            cands = [
                s
                for s in objs
                if s.bind == "LOCAL"
                and s.kind == "OBJECT"
                and s.name.startswith(prefix)
                and s.name[len(prefix) :].isdigit()
                and (base is None or (s.file and os.path.basename(s.file) == base))
            ]
        else:
            raise SymbolProblem(f"unknown binding kind {binding!r} for {name}")
        if target_symbol and len(cands) > 1:
            cands = [s for s in cands if s.name == target_symbol] or cands
        if not cands:
            where = f" in {file}" if file else ""
            raise SymbolProblem(f"{binding} symbol {name}{where} not found in {self.path}")
        if len({s.value for s in cands}) > 1:
            raise SymbolProblem(
                f"{binding} symbol {name} is ambiguous in {self.path} "
                f"({len(cands)} candidates{' in function ' + function if function else ''})"
            )
        return cands[0]

    def vaddr_to_offset(self, vaddr: int) -> int:
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise SymbolProblem(f"address {vaddr:#x} is not backed by {self.path}")

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        """Bytes the file holds at a link-time address (the original code, never a live copy)."""
        off = self.vaddr_to_offset(vaddr)
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(size)


def _build_id(elf: ELFFile) -> str | None:
    """From the PT_NOTE segments (a few program headers), else the note sections."""
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_NOTE":
            for note in seg.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    for sec in elf.iter_sections():
        if isinstance(sec, NoteSection):
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


def _symbols(elf: ELFFile) -> list[Symbol]:
    out: list[Symbol] = []
    for secname in (".symtab", ".dynsym"):
        sec = elf.get_section_by_name(secname)
        if not isinstance(sec, SymbolTableSection):
            continue
        current_file: str | None = None
        for sym in sec.iter_symbols():
            kind = sym["st_info"]["type"].replace("STT_", "")
            bind = sym["st_info"]["bind"].replace("STB_", "")
            if kind == "FILE":
                current_file = sym.name
                continue
            if not sym.name:
                continue
            out.append(
                Symbol(
                    sym.name,
                    sym["st_value"],
                    sym["st_size"],
                    kind,
                    bind,
                    current_file if bind == "LOCAL" else None,
                    sym["st_shndx"],
                )
            )
        if secname == ".symtab" and out:
            break  # .symtab is a superset of .dynsym
    return out


def _has_symtab(elf: ELFFile) -> bool:
    sec = elf.get_section_by_name(".symtab")
    return isinstance(sec, SymbolTableSection) and sec.num_symbols() > 1


def _debuglink(elf: ELFFile) -> str | None:
    sec = elf.get_section_by_name(".gnu_debuglink")
    if sec is None:
        return None
    data = sec.data()
    return data[: data.index(b"\0")].decode()


def find_debug_file(path: str, build_id: str | None, debuglink: str | None) -> str | None:
    """Separate debug file by build-id, then by `.gnu_debuglink` (gdb's search order)."""
    if build_id:
        for root in DEBUG_ROOTS:
            cand = Path(root, ".build-id", build_id[:2], build_id[2:] + ".debug")
            if cand.exists():
                return str(cand)
    if debuglink:
        d = os.path.dirname(os.path.realpath(path))
        for cand in (
            Path(d, debuglink),
            Path(d, ".debug", debuglink),
            *(Path(root + d, debuglink) for root in DEBUG_ROOTS),
        ):
            if cand.exists() and os.path.realpath(cand) != os.path.realpath(path):
                return str(cand)
    return None


@functools.lru_cache(maxsize=1024)
def _load_cached(path: str, st_key: tuple[int, int, int], need_symtab: bool) -> ElfImage:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        build_id = _build_id(elf)
        segments = [
            Segment(
                p["p_vaddr"], p["p_offset"], p["p_filesz"], p["p_memsz"], p["p_flags"], p["p_align"]
            )
            for p in elf.iter_segments()
            if p["p_type"] == "PT_LOAD"
        ]
        elf_type = elf["e_type"]
        link = _debuglink(elf)
        if not need_symtab:
            # identity and layout only: --exe/--lib discovery, load biases and the linker's
            # scope look at every mapped object, and parsing libc's symbols for that took
            # seconds per process under load
            return ElfImage(path, build_id, elf_type, segments, [], None, link)
        if _has_symtab(elf):
            return ElfImage(path, build_id, elf_type, segments, _symbols(elf), None, link)
    debug = find_debug_file(path, build_id, link)
    if debug is None:
        raise DebugInfoMissing(
            f"{path} is stripped and no debug file was found (looked for "
            f"/usr/lib/debug/.build-id/{(build_id or '??')[:2]}/{(build_id or '')[2:]}.debug"
            f"{' and ' + link if link else ''}); install its -dbgsym/-dbg package"
        )
    with open(debug, "rb") as f:
        dbg = ELFFile(f)
        dbg_id = _build_id(dbg)
        if build_id and dbg_id and dbg_id != build_id:
            raise DebugInfoMissing(
                f"debug file {debug} has build-id {dbg_id}, {path} has {build_id}"
            )
        syms = _symbols(dbg)
    return ElfImage(path, build_id, elf_type, segments, syms, debug, link)


def load_elf(path: str, need_symtab: bool = True) -> ElfImage:
    """Parse `path` once per (inode, size, mtime); with need_symtab, its symbols (from its debug
    file when stripped); without, only build-id, type and segments (no symbols: cheap)."""
    st = os.stat(path)
    return _load_cached(
        os.path.realpath(path), (st.st_ino, st.st_size, int(st.st_mtime_ns)), need_symtab
    )
