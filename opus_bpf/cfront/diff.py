"""Old/new function matching: which functions a patch modifies, adds or removes."""

from __future__ import annotations

from dataclasses import dataclass, field

from pycparser import c_generator

from .tu import FunctionDef, TranslationUnit


@dataclass
class ChangeSet:
    """Function names, sorted. ``signature_changed`` is the subset of ``modified`` whose
    declaration (return/parameter types, storage, inline) changed, not just the body."""

    modified: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signature_changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.modified or self.added or self.removed)


def function_text(fd: FunctionDef) -> str:
    """Canonical text of a definition: coordinates, comments and layout don't matter."""
    return c_generator.CGenerator().visit(fd.node)


def _decl_text(fd: FunctionDef) -> str:
    return c_generator.CGenerator().visit(fd.node.decl)


def changed_functions(old_tu: TranslationUnit, new_tu: TranslationUnit) -> ChangeSet:
    """Compare the functions each TU's own file defines, after preprocessing.

    A function whose source is untouched but which expands a macro whose definition changed
    counts as modified: what it compiles to changed.
    """
    old, new = old_tu.functions, new_tu.functions
    cs = ChangeSet()
    for name in sorted(old.keys() & new.keys()):
        if function_text(old[name]) != function_text(new[name]):
            cs.modified.append(name)
            if _decl_text(old[name]) != _decl_text(new[name]):
                cs.signature_changed.append(name)
    cs.added = sorted(new.keys() - old.keys())
    cs.removed = sorted(old.keys() - new.keys())
    return cs
