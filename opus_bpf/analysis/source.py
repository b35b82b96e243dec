"""Raw source text next to the AST: the line a finding quotes, a function's unpreprocessed text
(the macro rule compares it), and GNU attributes the pycparser shim erased (noreturn)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pycparser import c_ast

_END = object()


def fingerprint(node: c_ast.Node, drop_names: bool = False,
                line_const: Callable[[c_ast.Constant], bool] | None = None) -> tuple:
    """Structural identity of a subtree without coordinates: a flat pre-order token tuple
    (class, attributes, child slot names, end markers), which is unambiguous and cheap.

    drop_names ignores declarator names (parameter renames are not signature changes).
    line_const tells which integer constants are __LINE__ expansions (assert, logging macros):
    they become "<line>", so a function that merely moved does not look recompiled.
    """
    toks: list = []
    push = toks.append
    stack: list = [node]
    pop = stack.pop
    while stack:
        n = pop()
        if n is _END:
            push(")")
            continue
        if type(n) is str:
            push(n)
            continue
        cls = n.__class__
        if line_const is not None and cls is c_ast.Constant and line_const(n):
            push("<line>")
            continue
        push(cls.__name__)
        for a in cls.attr_names:
            if drop_names and (a == "declname" or a == "name") and (
                cls is c_ast.TypeDecl or cls is c_ast.Decl
            ):
                continue
            v = getattr(n, a)
            push(tuple(v) if type(v) is list else v)
        stack.append(_END)
        kids = n.children()
        for i in range(len(kids) - 1, -1, -1):
            name, c = kids[i]
            stack.append(c)
            stack.append(name)
    return tuple(toks)


class SourceCache:
    """Reads files named by AST coordinates (relative to `root`), caches lines."""

    def __init__(self, root: str | None, preset: dict[str, str] | None = None) -> None:
        self.root = root
        self._text: dict[str, str | None] = dict(preset or {})
        self._lines: dict[str, list[str] | None] = {}

    def text(self, file: str | None) -> str | None:
        if not file:
            return None
        if file in self._text:
            return self._text[file]
        p = Path(file)
        if not p.is_absolute() and self.root:
            p = Path(self.root) / p
        try:
            t: str | None = p.read_text(errors="replace")
        except OSError:
            t = None
        self._text[file] = t
        return t

    def lines(self, file: str | None) -> list[str] | None:
        if not file:
            return None
        if file not in self._lines:
            t = self.text(file)
            self._lines[file] = t.splitlines() if t is not None else None
        return self._lines[file]

    def line(self, file: str | None, line: int | None) -> str | None:
        ls = self.lines(file)
        if ls is None or not line or line > len(ls):
            return None
        return ls[line - 1].strip()

    def function_text(self, file: str | None, line: int | None,
                      last_line: int | None = None, name: str | None = None) -> str | None:
        """Text of the function whose declarator starts at `line`, up to its closing brace.

        Braces are counted in the first branch of each #if only (branches often open the same
        block differently), and the text reaches at least `last_line` (the last line the AST
        puts in the function). Comments and whitespace are dropped so that reformatting alone
        does not count as a change.
        """
        t = self.text(file)
        if t is None or not line:
            return None
        ls = t.splitlines(keepends=True)
        if line > len(ls):
            return None
        start = sum(len(x) for x in ls[: line - 1])
        if name:
            # start at the function's own name: a struct or another function may share the line
            m = re.search(r"\b" + re.escape(name) + r"\s*\(", ls[line - 1])
            if m:
                start += m.start()
        body = _strip_comments(t[start:])
        depth = 0
        opened = False
        cond: list[tuple[int, int | None]] = []  # (depth at #if, depth after first branch)
        j = 0
        n = len(body)
        cur_line = line
        at_line_start = True
        while j < n:
            ch = body[j]
            if ch == "\n":
                cur_line += 1
                at_line_start = True
                j += 1
                continue
            if at_line_start and ch == "#":
                k = body.find("\n", j)
                k = n if k < 0 else k
                while k < n and body[k - 1] == "\\":  # continued directive
                    k2 = body.find("\n", k + 1)
                    cur_line += 1
                    k = n if k2 < 0 else k2
                word = body[j + 1 : k].strip().split(" ")[0].strip()
                if word.startswith("if"):
                    cond.append((depth, None))
                elif word in ("else", "elif", "elifdef", "elifndef") and cond:
                    d0, d1 = cond[-1]
                    cond[-1] = (d0, depth if d1 is None else d1)
                    depth = d0
                elif word == "endif" and cond:
                    d0, d1 = cond.pop()
                    if d1 is not None:
                        depth = d1
                j = k
                continue
            if not ch.isspace():
                at_line_start = False
            if ch in "\"'":
                j = _skip_literal(body, j)
                continue
            if ch == "{":
                depth += 1
                opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth <= 0 and (last_line is None or cur_line >= last_line):
                    return re.sub(r"\s+", " ", body[: j + 1]).strip()
            j += 1
        return None


def _skip_literal(s: str, i: int) -> int:
    q = s[i]
    i += 1
    while i < len(s) and s[i] != q:
        if s[i] == "\\":
            i += 1
        elif s[i] == "\n":
            break
        i += 1
    return i + 1


_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", re.S)


def _strip_comments(s: str) -> str:
    # a comment becomes its newlines (or one space): line numbers stay right
    return _COMMENT.sub(
        lambda m: ("\n" * m.group(0).count("\n") or " ") if m.group(0)[0] == "/" else m.group(0),
        s,
    )


_NORETURN_ATTR = re.compile(
    r"__attribute__\s*\(\(\s*(?:__)?noreturn(?:__)?\s*\)\)|\b_Noreturn\b|\[\[\s*(?:gnu::)?"
    r"(?:__)?noreturn(?:__)?\s*\]\]|\bnoreturn\b"
)


def noreturn_declared(text: str | None, name: str) -> bool:
    """Does any declaration of `name` in the raw text carry a noreturn marker?

    The GNU shim erases __attribute__ before pycparser sees it, so this reads the source.
    """
    if not text or name not in text:
        return False
    clean = _strip_comments(text)
    for m in re.finditer(r"\b" + re.escape(name) + r"\s*\(", clean):
        # the declaration containing this name: from the previous ';', '}' or '{' to the next
        # ';' or '{'
        lo = max(clean.rfind(";", 0, m.start()), clean.rfind("}", 0, m.start()),
                 clean.rfind("{", 0, m.start()), clean.rfind("#", 0, m.start()))
        hi_candidates = [x for x in (clean.find(";", m.end()), clean.find("{", m.end())) if x >= 0]
        hi = min(hi_candidates) if hi_candidates else len(clean)
        if _NORETURN_ATTR.search(clean[lo + 1 : hi]):
            return True
    return False
