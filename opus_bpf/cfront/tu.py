"""Parse one translation unit and index what its own source file defines."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pycparser import c_ast, c_parser

from .errors import CFrontError
from .names import FunctionNames, function_names
from .preprocess import preprocess


@dataclass
class LocalStatic:
    """A ``static`` object declared inside a function body (``name.N`` in the symbol table)."""

    name: str
    node: c_ast.Decl
    line: int
    has_initializer: bool
    is_const: bool


@dataclass
class FunctionDef:
    """A function defined in the TU's own source file (not in a header)."""

    name: str
    node: c_ast.FuncDef
    file: str
    line: int
    is_static: bool
    is_inline: bool
    local_statics: list[LocalStatic] = field(default_factory=list)

    @cached_property
    def names(self) -> FunctionNames:
        """Free, bound and member names of the body (see :mod:`opus_bpf.cfront.names`)."""
        return function_names(self.node)


@dataclass
class GlobalVar:
    """A file-scope object declared or defined in the TU's own source file."""

    name: str
    storage: str  # "static", "extern" or "" (plain definition / tentative definition)
    has_initializer: bool
    line: int
    node: c_ast.Decl


@dataclass
class FileScopeName:
    """Every file-scope object or function name visible in the TU (headers included).

    ``static`` is True when any file-scope declaration says static (C: internal linkage
    sticks); ``defined_in_file`` when the TU's own file defines it (body or object definition).
    """

    name: str
    kind: str  # "object" | "function"
    static: bool
    defined_in_file: bool
    decl: c_ast.Decl
    is_tls: bool = False


@dataclass
class TranslationUnit:
    """A parsed TU. ``functions``/``globals`` hold only what *path* itself defines."""

    path: str
    ast: c_ast.FileAST
    functions: dict[str, FunctionDef]
    globals: dict[str, GlobalVar]
    file_scope: dict[str, FileScopeName]
    typedefs: set[str]
    enumerators: set[str]

    def local_statics(self, function: str) -> list[LocalStatic]:
        """Function-local static declarations of *function* (empty if none / unknown)."""
        fd = self.functions.get(function)
        return list(fd.local_statics) if fd else []


def _same_file(coord_file: str, path: str, cwd: str | None) -> bool:
    if coord_file == path:
        return True
    base = Path(cwd or ".")
    try:
        return (base / coord_file).resolve() == (base / path).resolve()
    except OSError:
        return False


def _is_funcdecl(t: c_ast.Node) -> bool:
    return isinstance(t, c_ast.FuncDecl)


def _quals(t: c_ast.Node) -> list[str]:
    while t is not None and not isinstance(t, c_ast.TypeDecl):
        if isinstance(t, c_ast.PtrDecl):
            return list(t.quals)
        t = getattr(t, "type", None)
    return list(t.quals) if t is not None else []


def _collect_local_statics(body: c_ast.Node) -> list[LocalStatic]:
    found: list[LocalStatic] = []

    class V(c_ast.NodeVisitor):
        def visit_Decl(self, node: c_ast.Decl) -> None:  # noqa: N802
            if "static" in node.storage and node.name and not _is_funcdecl(node.type):
                found.append(LocalStatic(node.name, node, node.coord.line if node.coord else 0,
                                         node.init is not None, "const" in _quals(node.type)))
            self.generic_visit(node)

    V().visit(body)
    return found


_ASM = re.compile(r"\b(?:__asm__|__asm|asm)\b(?:\s|volatile|goto|inline)*\(")


_LABEL_ADDR = re.compile(r"((?:[(,={?:]|\breturn)(?:[ \t\r\n]|(?<=\n)#[^\n]*)*)&&[ \t]*"
                         r"([A-Za-z_]\w*)")
_COMPUTED_GOTO = re.compile(r"\bgoto\s*\*([^;]*);")
_CASE_RANGE = re.compile(r"\bcase\b([^:;?\n]*?)\.\.\.([^:;?\n]*):(?!:)")


def _strip_asm(text: str) -> str:
    """Replace GNU asm statements (``__asm__ volatile ("" ::: "memory")``), which pycparser
    cannot parse, by ``__opus_asm("<hash of the asm text>")``, so an edited asm statement is
    still a changed function; asm labels on declarations are already gone (gnu_shim.h). Line
    breaks are kept so coordinates stay right."""
    out: list[str] = []
    pos = 0
    for m in _ASM.finditer(text):
        if m.start() < pos:
            continue
        i, depth = m.end(), 1
        while i < len(text) and depth:
            c = text[i]
            if c in "\"'":
                j = i + 1
                while j < len(text) and text[j] != c:
                    j += 2 if text[j] == "\\" else 1
                i = j + 1
                continue
            depth += c == "("
            depth -= c == ")"
            i += 1
        digest = hashlib.sha1(text[m.start():i].encode(errors="surrogateescape")).hexdigest()
        out.append(text[pos:m.start()] + f'__opus_asm("{digest[:16]}")'
                   + "\n" * text.count("\n", m.start(), i))
        pos = i
    out.append(text[pos:])
    return "".join(out)


_TYPEOF = re.compile(r"\btypeof\b")


def _parse_with_typeof(text: str, path: str) -> c_ast.FileAST:
    """typeof needs pycparser's c23 dialect, which also reserves bool/true/false/...: if the
    TU uses those as identifiers, parse it as before C23 with each typeof(...) read as int
    (enough for indexing; a change inside the typeof then only shows when it changes more)."""
    try:
        return c_parser.CParser(dialect="c23").parse(text, path)
    except c_parser.ParseError:
        out: list[str] = []
        pos = 0
        for m in re.finditer(r"\btypeof\s*\(", text):
            if m.start() < pos:
                continue
            i, depth = m.end(), 1
            while i < len(text) and depth:
                depth += text[i] == "("
                depth -= text[i] == ")"
                i += 1
            out.append(text[pos:m.start()] + "int" + "\n" * text.count("\n", m.start(), i))
            pos = i
        out.append(text[pos:])
        return c_parser.CParser().parse("".join(out), path)


def parse_text(text: str, path: str, cwd: str | os.PathLike[str] | None = None
               ) -> TranslationUnit:
    """Parse already-preprocessed *text* whose main file is *path*."""
    if "asm" in text:
        text = _strip_asm(text)
    if "goto" in text and "&&" in text:
        # GNU labels as values: "&&label" and "goto *expr;" (interpreter dispatch tables)
        text = _LABEL_ADDR.sub(r"\1__opus_label_addr(\2)", text)
        text = _COMPUTED_GOTO.sub(r"__opus_computed_goto(\1);", text)
    if "..." in text:
        # GNU case ranges: "case 'a' ... 'z':" parses as "case 'a': case 'z':", so both bounds
        # stay in the AST and a changed bound is a changed function
        text = _CASE_RANGE.sub(r"case \1: case \2:", text)
    parser = c_parser.CParser()
    try:
        if _TYPEOF.search(text):
            ast = _parse_with_typeof(text, str(path))
        else:
            ast = parser.parse(text, str(path))
    except c_parser.ParseError as e:
        msg = str(e)
        if not re.search(r":\d+", msg):
            # some pycparser errors carry no coordinates: use where the lexer stopped
            lex = getattr(parser, "clex", None)
            line = getattr(lex, "_lineno", None)
            if line is not None:
                msg = f"{getattr(lex, 'filename', path)}:{line}: {msg.split(': ', 1)[-1]}"
        raise CFrontError(f"cannot parse {path}: {msg} (a GNU extension not covered by "
                          f"cfront/gnu_shim.h, or a syntax error)") from e
    cwd_s = str(cwd) if cwd is not None else None
    functions: dict[str, FunctionDef] = {}
    globals_: dict[str, GlobalVar] = {}
    scope: dict[str, FileScopeName] = {}
    typedefs: set[str] = set()
    enumerators: set[str] = set()

    def note(decl: c_ast.Decl, kind: str, defined_here: bool) -> None:
        prev = scope.get(decl.name)
        static = "static" in decl.storage or (prev is not None and prev.static)
        tls = "_Thread_local" in decl.storage or "__thread" in decl.storage
        scope[decl.name] = FileScopeName(
            decl.name, kind, static, defined_here or (prev is not None and prev.defined_in_file),
            decl if (prev is None or defined_here) else prev.decl,
            tls or (prev is not None and prev.is_tls))

    def note_enums(t: c_ast.Node | None) -> None:
        for n in _walk_types(t):
            if isinstance(n, c_ast.Enum) and n.values is not None:
                enumerators.update(e.name for e in n.values.enumerators)

    for ext in ast.ext:
        in_file = ext.coord is not None and _same_file(ext.coord.file, str(path), cwd_s)
        if isinstance(ext, c_ast.FuncDef):
            d = ext.decl
            note(d, "function", in_file)
            if in_file:
                functions[d.name] = FunctionDef(
                    name=d.name, node=ext, file=ext.coord.file, line=d.coord.line,
                    is_static="static" in d.storage, is_inline="inline" in d.funcspec,
                    local_statics=_collect_local_statics(ext.body))
        elif isinstance(ext, c_ast.Decl):
            note_enums(ext.type)
            if not ext.name:
                continue
            if _is_funcdecl(ext.type):
                note(ext, "function", False)
                continue
            storage = "static" if "static" in ext.storage else (
                "extern" if "extern" in ext.storage else "")
            note(ext, "object", in_file and storage != "extern")
            if in_file:
                prev = globals_.get(ext.name)
                globals_[ext.name] = GlobalVar(
                    ext.name, storage if prev is None or storage else prev.storage,
                    ext.init is not None or (prev is not None and prev.has_initializer),
                    ext.coord.line if ext.coord else 0, ext)
        elif isinstance(ext, c_ast.Typedef):
            typedefs.add(ext.name)
            note_enums(ext.type)
    return TranslationUnit(str(path), ast, functions, globals_, scope, typedefs, enumerators)


def _walk_types(t: c_ast.Node | None):
    while t is not None:
        yield t
        t = getattr(t, "type", None)


_CACHE: OrderedDict[tuple[str, str, str], TranslationUnit] = OrderedDict()
_CACHE_SIZE = 16


def parse(path: str | os.PathLike[str], cflags: list[str] | None = None,
          cwd: str | os.PathLike[str] | None = None, *, cc: str = "gcc") -> TranslationUnit:
    """Preprocess *path* with its own *cflags* (run in *cwd*) and parse it with pycparser.

    pycparser needs ~1 s for a TU that includes much of glibc, and analysis and build parse
    the same old/new TUs: results are cached by the preprocessed text, so treat the returned
    TranslationUnit (and its AST) as read-only.
    """
    text = preprocess(path, cflags, cwd, cc=cc)
    key = (hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest(), str(path),
           str(Path(cwd or ".").resolve()))
    tu = _CACHE.get(key)
    if tu is not None:
        _CACHE.move_to_end(key)
        return tu
    tu = parse_text(text, str(path), cwd)
    _CACHE[key] = tu
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tu
