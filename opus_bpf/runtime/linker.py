"""Resolve the patch object's undefined symbols (libc's, mostly) in the target's global scope.

The loader maps the patch object itself, without dlopen, so it must do the dynamic linker's
symbol lookup: the executable first, then each mapped shared object, honouring symbol versions
(pthread_cond_wait@GLIBC_2.3.2 and @GLIBC_2.2.5 are different functions).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

from opus_bpf.errors import InjectionError
from opus_bpf.target.elf import load_elf
from opus_bpf.target.process import Mapping, load_bias, mapped_objects


@dataclass(frozen=True)
class DynSym:
    value: int
    version: str | None
    hidden: bool  # a non-default version (name@VER, not name@@VER)
    kind: str


@functools.lru_cache(maxsize=1024)
def _exports(path: str, key: tuple[int, int]) -> dict[str, list[DynSym]]:
    out: dict[str, list[DynSym]] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        dynsym = elf.get_section_by_name(".dynsym")
        if not isinstance(dynsym, SymbolTableSection):
            return out
        versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
        verdef = next((s for s in elf.iter_sections() if isinstance(s, GNUVerDefSection)), None)
        names: dict[int, str] = {}
        if verdef is not None:
            for vd, auxs in verdef.iter_versions():
                aux = next(iter(auxs), None)
                if aux is not None:
                    names[vd["vd_ndx"]] = aux.name
        for i, sym in enumerate(dynsym.iter_symbols()):
            if sym["st_shndx"] == "SHN_UNDEF" or not sym.name:
                continue
            if sym["st_info"]["bind"] == "STB_LOCAL":
                continue
            ndx = versym.get_symbol(i)["ndx"] if versym is not None else 1
            ndx_num = ndx if isinstance(ndx, int) else 1
            hidden = bool(ndx_num & 0x8000)
            ver = names.get(ndx_num & 0x7FFF)
            out.setdefault(sym.name, []).append(
                DynSym(sym["st_value"], ver, hidden, sym["st_info"]["type"])
            )
    return out


def exports(path: str) -> dict[str, list[DynSym]]:
    st = os.stat(path)
    return _exports(os.path.realpath(path), (st.st_ino, int(st.st_mtime_ns)))


def required_versions(elf: ELFFile) -> dict[int, str]:
    """Symbol index -> required version name, from the patch object's .gnu.version_r."""
    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    verneed = next((s for s in elf.iter_sections() if isinstance(s, GNUVerNeedSection)), None)
    if versym is None or verneed is None:
        return {}
    names: dict[int, str] = {}
    for _vn, auxs in verneed.iter_versions():
        for aux in auxs:
            names[aux["vna_other"]] = aux.name
    out = {}
    for i in range(versym.num_symbols()):
        ndx = versym.get_symbol(i)["ndx"]
        if isinstance(ndx, int) and (ndx & 0x7FFF) in names:
            out[i] = names[ndx & 0x7FFF]
    return out


class GlobalScope:
    """The objects a process has mapped, in lookup order: executable first, then libraries."""

    def __init__(self, pid: int, maps: list[Mapping], skip: set[str] | None = None) -> None:
        groups = {
            p: ms for p, ms in mapped_objects(pid, maps).items() if p not in (skip or set())
        }
        exe = os.readlink(f"/proc/{pid}/exe")
        self.objects: list[tuple[str, int]] = []
        for path in sorted(groups, key=lambda p: (p != exe, "/ld-linux" in p)):
            try:
                image = load_elf(path, need_symtab=False)
                bias = load_bias(image, groups[path])
            except Exception:  # noqa: BLE001 - non-ELF mappings (locale archives, data files)
                continue
            self.objects.append((path, bias))

    def resolve(self, name: str, version: str | None) -> int:
        for path, bias in self.objects:
            cands = exports(path).get(name)
            if not cands:
                continue
            if version:
                pick = [c for c in cands if c.version == version]
            else:
                pick = [c for c in cands if not c.hidden]
            if pick:
                if pick[0].kind in ("STT_GNU_IFUNC", "STT_LOOS"):  # pyelftools names 10 STT_LOOS
                    return bias + _ifunc_offset(path, name, version)
                return bias + pick[0].value
        want = f"{name}@{version}" if version else name
        raise InjectionError(
            f"symbol {want} needed by the patch is not defined by any object in the process; "
            "rebuild the patch against the libraries the target uses"
        )


def _ifunc_offset(path: str, name: str, version: str | None) -> int:
    """Offset in `path` of the implementation an IFUNC resolver picks on this machine.

    The symbol's value is its resolver, not the function (memcpy, strchr, strlen are IFUNCs in
    glibc). Running the resolver inside the target would mean running its code; instead the
    dynamic linker of *this* process resolves the same symbol of the same file (same build-id),
    on the same CPU, and the offset from the library's base carries over.
    """
    want = load_elf(path, need_symtab=False).build_id
    groups = mapped_objects(os.getpid())
    # the same file is mapped here under the same name (libc.so.6): look at those first, so
    # that resolving an IFUNC does not parse every library this Python process maps
    base = os.path.basename(os.path.realpath(path))
    ordered = sorted(
        groups.items(), key=lambda kv: os.path.basename(os.path.realpath(kv[0])) != base
    )
    mine = None
    for p, maps in ordered:
        try:
            img = load_elf(p, need_symtab=False)
        except Exception:  # noqa: BLE001 - non-ELF mappings
            continue
        if img.build_id == want:
            mine = (p, load_bias(img, maps))
            break
    if mine is None:  # not mapped here yet: dlopen it, then its mappings exist
        try:
            ctypes.CDLL(path)
        except OSError as exc:
            raise InjectionError(f"cannot resolve IFUNC {name} of {path}: {exc}") from exc
        maps = mapped_objects(os.getpid()).get(os.path.realpath(path), [])
        mine = (path, load_bias(load_elf(path, need_symtab=False), maps))
    try:
        lib = ctypes.CDLL(mine[0])
    except OSError as exc:
        raise InjectionError(f"cannot resolve IFUNC {name} of {path}: {exc}") from exc
    libc = ctypes.CDLL(None)
    handle = ctypes.c_void_p(lib._handle)
    if version:
        fn = libc.dlvsym
        fn.argtypes, fn.restype = (
            (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p),
            ctypes.c_void_p,
        )
        addr = fn(handle, name.encode(), version.encode())
    else:
        fn = libc.dlsym
        fn.argtypes, fn.restype = (ctypes.c_void_p, ctypes.c_char_p), ctypes.c_void_p
        addr = fn(handle, name.encode())
    if not addr:
        raise InjectionError(f"cannot resolve IFUNC {name} of {path} in this process")
    return addr - mine[1]
