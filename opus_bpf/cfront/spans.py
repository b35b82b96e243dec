"""Where function definitions sit in *unpreprocessed* source text.

The patch TU is built from the original text (so macros, attributes and includes stay as the
author wrote them), which pycparser never sees. A small tokenizer that skips comments, string
and character literals and preprocessor lines, and matches braces, finds each top-level
``header { body }``; the caller cross-checks names against the parsed AST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\.?[0-9](?:[eEpP][+-]|[A-Za-z0-9_.'])*")


@dataclass(frozen=True)
class Token:
    kind: str  # "id" | "num" | "str" | "punct"
    text: str
    start: int  # offset in the source text
    end: int


@dataclass(frozen=True)
class FunctionSpan:
    """Offsets into the source text: ``start`` (first token of the definition), ``body_open``
    (the ``{``), ``end`` (one past the closing ``}``); ``name`` is the declared identifier."""

    name: str
    start: int
    body_open: int
    end: int
    header_tokens: tuple[Token, ...]

    def prototype(self, text: str) -> str:
        """The definition's header as a declaration: ``int f(int x)`` + ``;``."""
        return text[self.start:self.body_open].rstrip() + ";"


def tokenize(text: str) -> list[Token]:
    """C tokens of *text*, without comments, whitespace or preprocessor directives."""
    toks: list[Token] = []
    i, n = 0, len(text)
    line_start = True  # only whitespace since the last newline
    while i < n:
        c = text[i]
        if c == "\n":
            line_start = True
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if c == "\\" and i + 1 < n and text[i + 1] == "\n":
            i += 2
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 2 if text[i] == "\\" and i + 1 < n else 1
            continue
        if c == "#" and line_start:
            # a directive runs to the first newline not escaped by a backslash; comments inside
            # it may span lines
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n:
                    i += 2
                elif text.startswith("/*", i):
                    j = text.find("*/", i + 2)
                    i = n if j < 0 else j + 2
                elif text.startswith("//", i):
                    while i < n and text[i] != "\n":
                        i += 1
                else:
                    i += 1
            continue
        line_start = False
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            toks.append(Token("str", text[i:j + 1], i, min(j + 1, n)))
            i = j + 1
            continue
        m = _IDENT.match(text, i)
        if m:
            # string prefixes: L"..", u8"..", u'..'
            if m.end() < n and text[m.end()] in "\"'" and m.group() in ("L", "u", "U", "u8"):
                i = m.end()
                continue
            toks.append(Token("id", m.group(), i, m.end()))
            i = m.end()
            continue
        m = _NUMBER.match(text, i)
        if m:
            toks.append(Token("num", m.group(), i, m.end()))
            i = m.end()
            continue
        toks.append(Token("punct", c, i, i + 1))
        i += 1
    return toks


_AGGREGATE = {"struct", "union", "enum"}


def function_spans(text: str, names: set[str] | None = None) -> list[FunctionSpan]:
    """Top-level function definitions in *text*.

    ``name`` is the identifier directly before the first top-level ``(`` of the header that is
    in *names* (the AST's function names) when given, else the first such identifier that is
    not ``__attribute__``/``__declspec``-like. Headers where no name matches are skipped.
    """
    toks = tokenize(text)
    spans: list[FunctionSpan] = []
    depth = 0
    item_start = 0  # token index where the current top-level item began
    i = 0
    while i < len(toks):
        t = toks[i]
        if depth == 0 and t.text == ";":
            item_start = i + 1
        elif t.text == "{":
            if depth == 0 and _is_function_header(toks, item_start, i):
                close = _match_brace(toks, i)
                if close is None:
                    break
                header = tuple(toks[item_start:i])
                name = _header_name(header, names)
                if name is not None:
                    spans.append(FunctionSpan(name, toks[item_start].start, t.start,
                                              toks[close].end, header))
                i = close + 1
                item_start = i
                continue
            depth += 1
        elif t.text == "}":
            depth = max(0, depth - 1)
            if depth == 0:
                item_start = i + 1
                # "struct s {...} x;" continues the item; a function body never reaches here
                if i + 1 < len(toks) and toks[i + 1].text != ";":
                    item_start = _item_start_before(toks, i)
        i += 1
    return spans


def _item_start_before(toks: list[Token], close: int) -> int:
    """After ``}`` of a top-level aggregate/initializer the item began where its ``{`` item did:
    walk back to the matching ``{`` and then to the previous top-level ``;``/``}``."""
    depth = 0
    j = close
    while j >= 0:
        if toks[j].text == "}":
            depth += 1
        elif toks[j].text == "{":
            depth -= 1
            if depth == 0:
                break
        j -= 1
    while j > 0 and toks[j - 1].text not in (";", "}"):
        j -= 1
    return max(j, 0)


def _is_function_header(toks: list[Token], start: int, brace: int) -> bool:
    if brace == start:
        return False
    depth = 0
    saw_call = False
    for k in range(start, brace):
        tx = toks[k].text
        if depth == 0 and tx == "=":
            return False  # initializer
        if tx == "(":
            if depth == 0:
                saw_call = True
            depth += 1
        elif tx == ")":
            depth -= 1
    prev = toks[brace - 1]
    if prev.text in _AGGREGATE:
        return False
    if brace - 2 >= start and toks[brace - 2].text in _AGGREGATE and prev.kind == "id":
        return False
    return saw_call


def _match_brace(toks: list[Token], open_idx: int) -> int | None:
    depth = 0
    for k in range(open_idx, len(toks)):
        if toks[k].text == "{":
            depth += 1
        elif toks[k].text == "}":
            depth -= 1
            if depth == 0:
                return k
    return None


_NOT_NAMES = {"__attribute__", "__attribute", "__declspec", "__asm__", "__asm", "asm",
              "__typeof__", "__typeof", "typeof", "_Alignas", "alignas", "sizeof",
              "void", "char", "short", "int", "long", "float", "double", "signed", "unsigned",
              "_Bool", "const", "volatile", "static", "inline", "extern"}


def _header_name(header: tuple[Token, ...], names: set[str] | None) -> str | None:
    cands = [header[k].text for k in range(len(header) - 1)
             if header[k].kind == "id" and header[k + 1].text == "("]
    if names is not None:
        hits = [c for c in cands if c in names]
        if not hits:
            # a parenthesized name, as in "int (f) (void)" (defeats function-like macros)
            hits = [header[k].text for k in range(1, len(header) - 2)
                    if header[k].kind == "id" and header[k].text in names
                    and header[k - 1].text == "(" and header[k + 1].text == ")"
                    and header[k + 2].text == "("]
        return hits[0] if hits else None
    cands = [c for c in cands if c not in _NOT_NAMES]
    return cands[0] if cands else None
