"""What the build needs from ELF files: the target's identity and symbols, and the checks a
patch object must pass before the runtime may map it into a live process."""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from .errors import BuildError

DEBUG_ROOT = Path(os.environ.get("OPUS_BPF_DEBUG_ROOT", "/usr/lib/debug"))


@dataclass(frozen=True)
class Sym:
    name: str
    type: str  # STT_OBJECT / STT_FUNC / STT_TLS ...
    bind: str  # STB_LOCAL / STB_GLOBAL / STB_WEAK
    value: int
    size: int


@dataclass
class SymbolIndex:
    """Defined symbols of one ELF: globals by name, locals by (STT_FILE basename, name)."""

    globals: dict[str, Sym] = field(default_factory=dict)
    locals_by_file: dict[str, dict[str, list[Sym]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    files: set[str] = field(default_factory=set)
    source: str = ""  # path the symbols were read from (binary or its debug file)

    def global_sym(self, name: str) -> Sym | None:
        return self.globals.get(name)

    def local_sym(self, file: str, name: str) -> list[Sym]:
        return list(self.locals_by_file.get(os.path.basename(file), {}).get(name, []))

    def local_statics(self, file: str, name: str) -> list[Sym]:
        """``name.N`` LOCAL OBJECTs gcc emits for function-local statics in *file*."""
        group = self.locals_by_file.get(os.path.basename(file), {})
        prefix = name + "."
        return [s for key, syms in group.items() if key.startswith(prefix)
                and key[len(prefix):].isdigit() for s in syms if s.type == "STT_OBJECT"]


@dataclass
class TargetInfo:
    path: str
    build_id: str
    elf_type: str  # "EXEC" | "DYN"
    machine: str
    symbols: SymbolIndex


def _build_id(elf: ELFFile) -> str:
    for sec in elf.iter_sections():
        if sec.header.sh_type == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return str(note["n_desc"])
    return ""


def _debuglink(elf: ELFFile) -> str | None:
    sec = elf.get_section_by_name(".gnu_debuglink")
    if sec is None:
        return None
    data = sec.data()
    return data[: data.index(b"\0")].decode(errors="replace")


def _index_symbols(elf: ELFFile, source: str) -> SymbolIndex | None:
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return None
    idx = SymbolIndex(source=source)
    current_file = ""
    for s in symtab.iter_symbols():
        st_type = s["st_info"]["type"]
        bind = s["st_info"]["bind"]
        if st_type == "STT_FILE":
            current_file = os.path.basename(s.name)
            idx.files.add(current_file)
            continue
        if s["st_shndx"] == "SHN_UNDEF" or not s.name or "@" in s.name:
            # versioned names in .symtab are copies of shared-library objects (R_*_COPY) or
            # references: not state the target's own source defines
            continue
        sym = Sym(s.name, st_type, bind, s["st_value"], s["st_size"])
        if bind == "STB_LOCAL" and (current_file == "" or
                                    s["st_other"]["visibility"] == "STV_HIDDEN"):
            # a global with hidden visibility (-fvisibility=hidden): the static linker turned
            # it into a local symbol, listed after an empty STT_FILE; C code sees it as global
            idx.globals.setdefault(s.name, sym)
        elif bind == "STB_LOCAL":
            idx.locals_by_file[current_file][s.name].append(sym)
        else:
            idx.globals.setdefault(s.name, sym)
    return idx


def read_target(path: str | os.PathLike[str], debug_root: Path | None = None) -> TargetInfo:
    """Build-id, ELF type and symbol index of *path* (falling back to its separate debug
    file, found by build-id under /usr/lib/debug or by .gnu_debuglink, when stripped)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            etype = elf.header.e_type
            if etype not in ("ET_EXEC", "ET_DYN"):
                raise BuildError(f"{path} is an ELF {etype}, not an executable or shared "
                                 f"object; pass the binary the process runs")
            build_id = _build_id(elf)
            machine = elf.header.e_machine
            symbols = _index_symbols(elf, str(path))
            link = _debuglink(elf)
    except (ELFError, OSError) as e:
        raise BuildError(f"cannot read target binary {path}: {e}; pass the ELF file the "
                         f"running process executes") from e
    if not build_id:
        raise BuildError(f"{path} has no .note.gnu.build-id; relink it with -Wl,--build-id "
                         f"so a bundle can be matched to the running binary")
    if symbols is None:
        symbols = _debug_file_symbols(path, build_id, link, debug_root or DEBUG_ROOT)
    if symbols is None:
        raise BuildError(f"{path} is stripped (no .symtab) and no separate debug file was "
                         f"found; build the patch against the unstripped binary or install "
                         f"its debug file under {debug_root or DEBUG_ROOT}/.build-id/")
    return TargetInfo(str(path.resolve()), build_id, etype[3:], machine, symbols)


def _debug_file_symbols(path: Path, build_id: str, link: str | None, root: Path
                        ) -> SymbolIndex | None:
    cands = [root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"]
    if link:
        d = path.resolve().parent
        cands += [d / link, d / ".debug" / link, root / d.relative_to("/") / link]
    for c in cands:
        try:
            with open(c, "rb") as f:
                elf = ELFFile(f)
                if _build_id(elf) != build_id:
                    continue
                idx = _index_symbols(elf, str(c))
                if idx is not None:
                    return idx
        except (ELFError, OSError):
            continue
    return None


# x86-64 relocation types the patch loader cannot honour (TLS needs the target's TLS block
# layout; IRELATIVE runs a resolver function at load time)
_X86_64_BAD_RELOCS = {16: "R_X86_64_DTPMOD64", 17: "R_X86_64_DTPOFF64",
                      18: "R_X86_64_TPOFF64", 19: "R_X86_64_TLSGD", 20: "R_X86_64_TLSLD",
                      21: "R_X86_64_DTPOFF32", 22: "R_X86_64_GOTTPOFF",
                      23: "R_X86_64_TPOFF32", 37: "R_X86_64_IRELATIVE"}
_AARCH64_BAD_RELOCS = {1028: "R_AARCH64_TLS_DTPMOD64", 1029: "R_AARCH64_TLS_DTPREL64",
                       1030: "R_AARCH64_TLS_TPREL64", 1031: "R_AARCH64_TLSDESC",
                       1032: "R_AARCH64_IRELATIVE"}


def check_patch_object(so_path: str | os.PathLike[str], slots: list[str],
                       new_symbols: list[str], internal: set[str] | None = None) -> None:
    """Refuse what the runtime's loader cannot do safely; verify the symbols it will look up.

    *internal*: names with internal linkage in the target (its statics). One left undefined
    in the patch object would be bound to some other object's symbol of that name, or to
    nothing, at load time: it must have gone through a slot.
    """
    with open(so_path, "rb") as f:
        elf = ELFFile(f)
        bad = (_AARCH64_BAD_RELOCS if elf.header.e_machine == "EM_AARCH64"
               else _X86_64_BAD_RELOCS)
        for seg in elf.iter_segments():
            if seg.header.p_type == "PT_TLS":
                raise BuildError("patch object has thread-local storage (PT_TLS); the patch "
                                 "cannot define __thread/_Thread_local variables, keep them in "
                                 "the program")
        for sec in elf.iter_sections():
            if sec.name in (".init_array", ".ctors", ".preinit_array", ".fini_array",
                            ".dtors") and sec.header.sh_size > 0:
                raise BuildError(f"patch object has a non-empty {sec.name} (constructors or "
                                 f"destructors); remove __attribute__((constructor/destructor))"
                                 f" from the patch")
            if isinstance(sec, RelocationSection):
                for r in sec.iter_relocations():
                    name = bad.get(r["r_info_type"])
                    if name:
                        what = ("an ifunc (IRELATIVE)" if "IRELATIVE" in name
                                else "thread-local storage")
                        raise BuildError(f"patch object needs {name} in {sec.name}: {what} is "
                                         f"not supported in a live patch; avoid it in the "
                                         f"changed code")
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise BuildError("patch object has no .symtab (stripped?); the runtime needs it "
                             "to find slots and new functions")
        defined: dict[str, int] = defaultdict(int)
        undefined: set[str] = set()
        for s in symtab.iter_symbols():
            if s["st_shndx"] != "SHN_UNDEF" and s.name:
                defined[s.name] += 1
            elif s.name:
                undefined.add(s.name)
    leaked = sorted(undefined & (internal or set()))
    if leaked:
        raise BuildError(f"the patch object references the target's static {leaked[0]} "
                         f"directly instead of through a slot (used from a macro, attribute or "
                         f"initializer opus-bpf cannot see?); reference it from the changed "
                         f"function's code")
    for slot in slots:
        if defined.get(slot, 0) != 1:
            how = "missing from" if not defined.get(slot) else "not unique in"
            raise BuildError(f"slot {slot} is {how} the patch object's .symtab; this is an "
                             f"opus-bpf bug, report it with the patch")
    for sym in new_symbols:
        if defined.get(sym, 0) == 0:
            raise BuildError(f"new function {sym} is missing from the patch object's .symtab; "
                             f"this is an opus-bpf bug, report it with the patch")
        if defined[sym] > 1:
            raise BuildError(f"new function {sym} is defined more than once in the patch "
                             f"object (static functions with the same name in two changed "
                             f"files); patch one file per bundle")


def dwarf_local_static_address(elf_path: str, file_base: str, function: str, name: str
                               ) -> int | None:
    """Link-time address of the static *name* declared in *function* of *file_base*, from
    DWARF (DW_TAG_variable with a DW_OP_addr location under the function's DIE), or None.

    Needed only when a file has several ``name.N`` symbols: the symbol table alone does not
    say which function each belongs to.
    """
    try:
        with open(elf_path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return None
            dwarf = elf.get_dwarf_info()
            for cu in dwarf.iter_CUs():
                top = cu.get_top_DIE()
                cu_name = top.attributes.get("DW_AT_name")
                if cu_name is None or os.path.basename(
                        cu_name.value.decode(errors="replace")) != file_base:
                    continue
                for die in top.iter_children():
                    if die.tag != "DW_TAG_subprogram" or _die_name(die) != function:
                        continue
                    addr = _find_static(die, name)
                    if addr is not None:
                        return addr
                    origin = _origin(die)
                    if origin is not None:
                        addr = _find_static(origin, name)
                        if addr is not None:
                            return addr
    except (ELFError, OSError, KeyError, ValueError, AttributeError):
        return None
    return None


def _origin(die):
    for attr in ("DW_AT_abstract_origin", "DW_AT_specification"):
        if attr in die.attributes:
            return die.get_DIE_from_attribute(attr)
    return None


def _die_name(die) -> str | None:
    a = die.attributes.get("DW_AT_name")
    if a is not None:
        return a.value.decode(errors="replace")
    o = _origin(die)
    return _die_name(o) if o is not None else None


def _find_static(die, name: str) -> int | None:
    for child in die.iter_children():
        if child.tag == "DW_TAG_variable" and _die_name(child) == name:
            loc = child.attributes.get("DW_AT_location")
            if loc is not None and isinstance(loc.value, list) and len(loc.value) == 9 \
                    and loc.value[0] == 0x03:  # DW_OP_addr <8 bytes>
                return int.from_bytes(bytes(loc.value[1:9]), "little")
        if child.tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine"):
            addr = _find_static(child, name)
            if addr is not None:
                return addr
    return None


def inlined_into(elf_path: str, file_base: str, function: str) -> list[str]:
    """Functions of *file_base*'s CU that contain an inlined copy of *function* (DWARF
    DW_TAG_inlined_subroutine whose origin is *function*). Empty without debug info."""
    try:
        st = os.stat(elf_path)
    except OSError:
        return []
    return sorted(_inlined_map(elf_path, st.st_mtime_ns, st.st_size, file_base)
                  .get(function, ()))


@functools.lru_cache(maxsize=64)
def _inlined_map(elf_path: str, _mtime: int, _size: int, file_base: str
                 ) -> dict[str, frozenset[str]]:
    """inlined function -> the functions of the CU holding a copy of it: one walk of the CU
    for every question the build asks about it (a big CU takes seconds in pyelftools)."""
    out: dict[str, set[str]] = {}
    try:
        with open(elf_path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return {}
            for cu in elf.get_dwarf_info().iter_CUs():
                top = cu.get_top_DIE()
                cu_name = top.attributes.get("DW_AT_name")
                if cu_name is None or os.path.basename(
                        cu_name.value.decode(errors="replace")) != file_base:
                    continue
                for die in top.iter_children():
                    if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                        continue
                    caller = _die_name(die)
                    if not caller:
                        continue
                    for name in _inlined_names(die):
                        if name != caller:
                            out.setdefault(name, set()).add(caller)
    except (ELFError, OSError, KeyError, ValueError, AttributeError):
        return {}
    return {k: frozenset(v) for k, v in out.items()}


def _inlined_names(die) -> set[str]:
    names: set[str] = set()
    for child in die.iter_children():
        if child.tag == "DW_TAG_inlined_subroutine":
            n = _die_name(child)
            if n:
                names.add(n)
        if child.tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine"):
            names |= _inlined_names(child)
    return names


def defined_objects(so_path: str | os.PathLike[str]) -> set[str]:
    """Names of the data objects a patch object defines itself."""
    with open(so_path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            return set()
        return {s.name for s in symtab.iter_symbols() if s.name
                and s["st_info"]["type"] in ("STT_OBJECT", "STT_TLS")
                and s["st_shndx"] != "SHN_UNDEF"}
