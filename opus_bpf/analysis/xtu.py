"""Summaries of functions defined in other translation units of the program.

A call into another file is an `unknown-call` unless the program's other TUs are known (a
compilation database): then the defining TU is parsed once and its summary of the callee is
used, one file deep (the callee's own calls into third files stay unknown). Both versions of
the tree get their own resolver so old and new calls are judged alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .effects import Effect, External, Loc, summarize
from .tuindex import Scope, TUIndex, Unit


class ExternalResolver(External):
    """Finds and summarises non-static functions defined in `files` (relative to `root`)."""

    def __init__(self, root: Path, files: list[str],
                 parse: Callable[[Path, str], Unit], skip: set[str] | None = None) -> None:
        self.root = root
        self.files = [f for f in files if f.endswith(".c") and f not in (skip or set())]
        self.parse = parse
        self._texts: dict[str, str] = {}
        self._units: dict[str, TUIndex | None] = {}
        self._cache: dict[str, tuple[list[Effect], set[Loc], list[str]] | None] = {}

    def _text(self, rel: str) -> str:
        if rel not in self._texts:
            try:
                self._texts[rel] = (self.root / rel).read_text(errors="replace")
            except OSError:
                self._texts[rel] = ""
        return self._texts[rel]

    def _index(self, rel: str) -> TUIndex | None:
        if rel not in self._units:
            try:
                self._units[rel] = TUIndex(self.parse(self.root, rel))
            except Exception:  # a TU we cannot parse just leaves its functions unknown
                self._units[rel] = None
        return self._units[rel]

    def lookup(self, name: str) -> tuple[list[Effect], set[Loc], list[str]] | None:
        if name in self._cache:
            return self._cache[name]
        self._cache[name] = None  # also guards recursion through this resolver
        # a definition: the name and "(" at the start of a line or after a type, no ";" before
        # the body
        pat = re.compile(r"(?m)^[\w \t\*]*\b" + re.escape(name) + r"\s*\([^;]*?\)\s*(?:\{|$)")
        for rel in self.files:
            text = self._text(rel)
            if name not in text or not pat.search(text):
                continue
            idx = self._index(rel)
            if idx is None or name not in idx.functions or idx.is_static_function(name):
                continue
            sums = summarize(idx, [name])
            got = (sums.get(name, []), sums.returns.get(name, set()),
                   Scope.param_names(idx.functions[name]))
            self._cache[name] = got
            return got
        return None
