"""Every place a changed function's old code runs, so the bundle replaces all of them.

An entry jump only catches calls to the function's own symbol. gcc also leaves the old code in
places the jump does not reach: copies inlined into other functions (DWARF
``DW_TAG_inlined_subroutine``; a small static called once has no symbol at all) and clones with
another calling convention (``f.constprop.0``, ``f.isra.0``, ``f.part.0``) that callers call
directly. The fix is to replace the functions *containing* those copies or calls too: they are
unchanged in the source, so recompiling them from the new source inlines (or calls) the new
version. This is done to a fixpoint (a container may itself be inlined or cloned), within the
changed file (without LTO nothing else can inline or call a static's clone).

``f.cold`` is not a clone: it is the unlikely part of ``f`` itself, entered only from ``f``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..cfront import TranslationUnit
from ..target.elf import load_elf
from .elfinfo import Sym, SymbolIndex, inlined_into
from .errors import BuildError

# clones callers call instead of the function (not .cold: part of the function itself)
_CLONE = re.compile(r"\.(constprop|isra|part|lto_priv|specialized)\.\d+")


@dataclass
class Reach:
    """What the bundle must contain for one changed file."""

    replace: list[str] = field(default_factory=list)  # redirected: old entry -> new code
    copy: list[str] = field(default_factory=list)  # changed, but no symbol: compiled in only
    because: dict[str, list[str]] = field(default_factory=dict)  # container -> what it holds
    notes: list[str] = field(default_factory=list)


class _Finder:
    def __init__(self, binary: str, symbols: SymbolIndex, file_base: str,
                 tu: TranslationUnit) -> None:
        self.binary = binary
        self.syms = symbols
        self.file = file_base
        self.tu = tu
        self._image = None
        self._code: list[tuple[str, bytes, int]] | None = None

    def symbol(self, fn: str) -> Sym | None:
        """The out-of-line symbol of the TU's function *fn* (what an entry jump patches)."""
        fd = self.tu.functions.get(fn)
        if fd is not None and fd.is_static:
            found = [s for s in self.syms.local_sym(self.file, fn) if s.type == "STT_FUNC"]
            return found[0] if found else None
        g = self.syms.global_sym(fn)
        return g if g is not None and g.type in ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS") \
            else None

    def _pieces(self) -> list[tuple[str, Sym]]:
        """(TU function it belongs to, symbol) for every function symbol of the changed file:
        out-of-line copies, clones and .cold parts."""
        group = self.syms.locals_by_file.get(self.file, {})
        out: list[tuple[str, Sym]] = []
        for name, syms in group.items():
            owner = name.split(".", 1)[0]
            if owner in self.tu.functions:
                out += [(owner, s) for s in syms if s.type == "STT_FUNC" and s.size]
        for name in self.tu.functions:
            g = self.syms.global_sym(name)
            if g is not None and g.type == "STT_FUNC" and g.size:
                out.append((name, g))
        return out

    def clones(self, fn: str) -> list[Sym]:
        group = self.syms.locals_by_file.get(self.file, {})
        return [s for name, syms in group.items()
                if name.startswith(fn + ".") and _CLONE.fullmatch(name[len(fn):])
                for s in syms if s.type == "STT_FUNC"]

    def callers_of(self, addrs: set[int]) -> set[str]:
        """TU functions whose code calls or jumps (rel32: call, jmp, jcc) to one of *addrs*."""
        if self._code is None:
            if self._image is None:
                self._image = load_elf(self.binary, need_symtab=False)
            self._code = []
            for owner, s in self._pieces():
                try:
                    self._code.append((owner, self._image.read_vaddr(s.value, s.size), s.value))
                except Exception:  # noqa: BLE001 - not in a file-backed segment
                    continue
        found: set[str] = set()
        for owner, code, base in self._code:
            for m in re.finditer(rb"\xe8|\xe9|\x0f[\x80-\x8f]", code):
                end = m.end() + 4
                if end > len(code):
                    break
                rel = int.from_bytes(code[m.end():end], "little", signed=True)
                if base + end + rel in addrs:
                    found.add(owner)
                    break
        return found

    def containers(self, fn: str) -> dict[str, str]:
        """Functions holding old code of *fn*: container -> how (inlined / calls a clone)."""
        out = {c: "inlined" for c in inlined_into(self.syms.source, self.file, fn)}
        clones = self.clones(fn)
        if clones:
            for c in self.callers_of({s.value for s in clones}):
                out.setdefault(c, f"calls {', '.join(sorted(s.name for s in clones))}")
        out.pop(fn, None)
        return out


def reach(binary: str, symbols: SymbolIndex, file_base: str, tu: TranslationUnit,
          modified: list[str]) -> Reach:
    """The functions to replace and to copy so that no old copy of *modified* stays live."""
    finder = _Finder(binary, symbols, file_base, tu)
    r = Reach()
    work = list(modified)
    seen = set(work)
    while work:
        fn = work.pop(0)
        sym = finder.symbol(fn)
        holders = finder.containers(fn)
        if sym is None and not holders:
            r.replace.append(fn)  # no symbol, no DWARF saying where it went: refused later
            continue
        (r.replace if sym is not None else r.copy).append(fn)
        for c, how in sorted(holders.items()):
            if c == "main":
                where = ("is inlined into main" if how == "inlined"
                         else f"has old code in main ({how})")
                raise BuildError(f"{fn} ({file_base}) {where}, which a running process never "
                                 f"re-enters: the old code would keep running; rebuild the "
                                 f"program with __attribute__((noinline, noclone)) on {fn}")
            if c not in tu.functions:
                raise BuildError(f"{fn} has old code in {c}, which {file_base} does not define "
                                 f"(LTO?); rebuild without -flto or patch {c} too")
            r.because.setdefault(c, []).append(f"{fn} ({how})")
            if c not in seen:
                seen.add(c)
                work.append(c)
    extra = [c for c in r.replace if c not in modified]
    if extra:
        r.notes.append(
            f"{os.path.basename(file_base)}: also replaces "
            + ", ".join(f"{c} (holds {'; '.join(r.because[c])})" for c in extra)
            + (f"; {', '.join(r.copy)} compiled into the patch (no out-of-line copy)"
               if r.copy else ""))
    return r
