"""Index of one translation unit: functions, globals, types, enumerators, and a small type
resolver. The rules need types only to tell arrays (storage that lives where it is declared)
from pointers (storage that lives wherever the pointer came from)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycparser import c_ast

from .source import SourceCache, fingerprint


@dataclass
class Unit:
    """What the analysis needs of one parsed TU, whatever front end produced it.

    `root` is the directory file names in AST coordinates are relative to; it lets the macro
    rule read the raw text of functions (unchanged text + different AST = macro change).
    """

    ast: c_ast.FileAST
    path: str = ""
    root: str | None = None
    sources: dict[str, str] = field(default_factory=dict)


def as_unit(tu: Any) -> Unit:
    """Accept a cfront TranslationUnit, a bare FileAST or a Unit."""
    if isinstance(tu, Unit):
        return tu
    if isinstance(tu, c_ast.FileAST):
        return Unit(ast=tu)
    ast = getattr(tu, "ast", None)
    if not isinstance(ast, c_ast.FileAST):
        raise TypeError(f"not a translation unit: {type(tu).__name__}")
    path = str(getattr(tu, "path", "") or getattr(tu, "file", "") or "")
    root = getattr(tu, "cwd", None) or getattr(tu, "root", None)
    if root is None and path and Path(path).is_absolute():
        root = "/"  # coordinates are absolute paths too
    return Unit(ast=ast, path=path, root=str(root) if root else None)


def decl_storage(decl: c_ast.Decl) -> list[str]:
    return list(decl.storage or [])


def strip_typedefs(t: c_ast.Node | None, idx: TUIndex, depth: int = 0) -> c_ast.Node | None:
    """Follow typedef names until a structural type (pointer, array, struct...) appears."""
    while t is not None and depth < 20:
        depth += 1
        if isinstance(t, c_ast.Typename | c_ast.Decl):
            t = t.type
            continue
        if isinstance(t, c_ast.TypeDecl):
            inner = t.type
            if isinstance(inner, c_ast.IdentifierType):
                names = [n for n in inner.names if n not in ("const", "volatile")]
                if len(names) == 1 and names[0] in idx.typedefs:
                    t = idx.typedefs[names[0]].type
                    continue
                return inner
            if isinstance(inner, c_ast.Struct | c_ast.Union) and inner.decls is None:
                full = idx.records.get((type(inner).__name__, inner.name))
                return full if full is not None else inner
            return inner
        return t
    return t


def is_array(t: c_ast.Node | None, idx: TUIndex) -> bool | None:
    r = strip_typedefs(t, idx)
    if r is None:
        return None
    return isinstance(r, c_ast.ArrayDecl)


def is_pointerish(t: c_ast.Node | None, idx: TUIndex) -> bool | None:
    """Pointer or array (arrays decay); None when the type is unknown."""
    r = strip_typedefs(t, idx)
    if r is None:
        return None
    return isinstance(r, c_ast.PtrDecl | c_ast.ArrayDecl)


def pointee(t: c_ast.Node | None, idx: TUIndex) -> c_ast.Node | None:
    r = strip_typedefs(t, idx)
    if isinstance(r, c_ast.PtrDecl | c_ast.ArrayDecl):
        return r.type
    return None


def record_fields(rec: c_ast.Node | None) -> dict[str, c_ast.Node]:
    """Fields of a struct/union, anonymous members flattened in."""
    out: dict[str, c_ast.Node] = {}
    if not isinstance(rec, c_ast.Struct | c_ast.Union) or not rec.decls:
        return out
    for d in rec.decls:
        if d.name:
            out[d.name] = d.type
        elif isinstance(d.type, c_ast.TypeDecl | c_ast.Struct | c_ast.Union):
            inner = d.type.type if isinstance(d.type, c_ast.TypeDecl) else d.type
            out.update(record_fields(inner))
    return out


class TUIndex:
    """Name tables of one TU (file scope), built once per analysis."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.ast = unit.ast
        self.functions: dict[str, c_ast.FuncDef] = {}
        self.prototypes: dict[str, c_ast.Decl] = {}
        self.globals: dict[str, c_ast.Decl] = {}
        self.typedefs: dict[str, c_ast.Typedef] = {}
        self.records: dict[tuple[str, str], c_ast.Node] = {}
        self.enums: dict[str, c_ast.Enum] = {}
        self.enumerators: dict[str, int | None] = {}
        self.enumerator_owner: dict[str, str] = {}
        self._fp: dict[int, tuple] = {}
        self._fn_fp: dict[int, tuple] = {}
        self.sources = SourceCache(unit.root, unit.sources)
        self._line_macro_cache: dict[str, set[str]] = {}
        for ext in self.ast.ext:
            self._add_ext(ext)

    def _add_ext(self, ext: c_ast.Node) -> None:
        if isinstance(ext, c_ast.FuncDef):
            self.functions[ext.decl.name] = ext
            self._collect_types(ext.decl.type)
        elif isinstance(ext, c_ast.Typedef):
            self.typedefs[ext.name] = ext
            self._collect_types(ext.type)
        elif isinstance(ext, c_ast.Decl):
            self._collect_types(ext.type)
            if isinstance(ext.type, c_ast.FuncDecl):
                self.prototypes.setdefault(ext.name, ext)
            elif ext.name:
                prev = self.globals.get(ext.name)
                # a definition (initialiser or no extern) wins over an extern declaration
                if prev is None or ("extern" in decl_storage(prev) and ext.init is not None) or (
                    "extern" in decl_storage(prev) and "extern" not in decl_storage(ext)
                ):
                    self.globals[ext.name] = ext

    def _collect_types(self, node: c_ast.Node | None) -> None:
        """Record every struct/union/enum definition reachable from a declaration."""
        if node is None:
            return
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, c_ast.Struct | c_ast.Union) and n.decls is not None and n.name:
                self.records[(type(n).__name__, n.name)] = n
            if isinstance(n, c_ast.Enum) and n.values is not None:
                if n.name:
                    self.enums[n.name] = n
                self._add_enumerators(n)
            stack.extend(c for _, c in n.children())

    def _add_enumerators(self, en: c_ast.Enum) -> None:
        val: int | None = -1
        owner = en.name or "<anonymous enum>"
        for e in en.values.enumerators:
            if e.value is not None:
                from .values import const_eval

                v = const_eval(e.value, self)
                val = v if isinstance(v, int) else None
            else:
                val = None if val is None else val + 1
            self.enumerators[e.name] = val
            self.enumerator_owner[e.name] = owner

    def fp(self, node: c_ast.Node | None) -> tuple:
        """Structural fingerprint that ignores coordinates (cached per node)."""
        if node is None:
            return ()
        k = id(node)
        got = self._fp.get(k)
        if got is None:
            got = fingerprint(node)
            self._fp[k] = got
        return got

    def function_fp(self, fd: c_ast.FuncDef) -> tuple:
        """Fingerprint for "did this function change": like fp, but an integer constant equal
        to its own line number that the raw source line does not spell out (a __LINE__ from
        assert or a logging macro) is "<line>", so code that only moved is unchanged."""
        got = self._fn_fp.get(id(fd))
        if got is None:
            got = fingerprint(fd, line_const=self._is_line_const)
            self._fn_fp[id(fd)] = got
        return got

    def _is_line_const(self, c: c_ast.Constant) -> bool:
        if c.coord is None or not c.type.endswith("int"):
            return False
        try:
            value = int(c.value.rstrip("uUlL"), 0)
        except ValueError:
            return False
        if value != c.coord.line:
            return False
        raw = self.sources.line(c.coord.file, c.coord.line)
        # without the raw line we cannot tell a macro's __LINE__ from a literal: keep it
        if raw is None or re.search(rf"\b0*{value}\b", raw) is not None:
            return False
        # only a macro that can expand to __LINE__ counts: a constant macro (MAX_LINE = 256)
        # used on line 256 is a coincidence, and would wrongly make a moved function "changed"
        words = set(re.findall(r"[A-Za-z_]\w*", raw))
        return bool(words & self._line_macros(c.coord.file))

    def _line_macros(self, file: str | None) -> set[str]:
        """Names in `file` that may expand to __LINE__: assert, __LINE__, and #defines using it
        (directly or through another such macro)."""
        key = file or ""
        got = self._line_macro_cache.get(key)
        if got is None:
            got = {"__LINE__", "assert", "__ASSERT_FUNCTION"}
            text = self.sources.text(file) or ""
            # the program's own headers too: redis's serverAssert lives in server.h
            for header in self._project_headers():
                if header != file:
                    text += "\n" + (self.sources.text(header) or "")
            # a body continued with backslash-newline is read whole (libevent's EVUTIL_ASSERT
            # reaches __LINE__ on its fifth line)
            defs = re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(?:\([^)]*\))?"
                              r"((?:[^\n]*\\\n)*[^\n]*)", text, re.M)
            changed = True
            while changed:
                changed = False
                for name, body in defs:
                    if name not in got and set(re.findall(r"\w+", body)) & got:
                        got.add(name)
                        changed = True
            self._line_macro_cache[key] = got
        return got

    def _project_headers(self) -> list[str]:
        """Files other than system headers that declared something at file scope in this TU."""
        got = getattr(self, "_headers", None)
        if got is None:
            seen: dict[str, None] = {}
            for ext in self.ast.ext:
                f = ext.coord.file if ext.coord is not None else None
                if f and not f.startswith(("/usr/", "<")):
                    seen.setdefault(f, None)
            got = self._headers = list(seen)
        return got

    def is_static_function(self, name: str) -> bool:
        fd = self.functions.get(name)
        if fd is not None and "static" in decl_storage(fd.decl):
            return True
        proto = self.prototypes.get(name)
        return proto is not None and "static" in decl_storage(proto)

    def is_inline(self, name: str) -> bool:
        """Inline in any declaration: callers may carry their own copy."""
        fd = self.functions.get(name)
        spec = list(fd.decl.funcspec or []) if fd is not None else []
        proto = self.prototypes.get(name)
        if proto is not None:
            spec += list(proto.funcspec or [])
        return "inline" in spec or "__inline" in spec or "__inline__" in spec


class Scope:
    """Names visible in one function: params, locals (with local statics) and file scope."""

    def __init__(self, idx: TUIndex, fd: c_ast.FuncDef) -> None:
        self.idx = idx
        self.fd = fd
        self.fname = fd.decl.name
        self.params: dict[str, c_ast.Node | None] = {}
        self.param_order: list[str] = []
        self.locals: dict[str, c_ast.Node] = {}
        self.local_statics: dict[str, c_ast.Decl] = {}
        ftype = fd.decl.type
        if isinstance(ftype, c_ast.FuncDecl) and ftype.args is not None:
            for p in ftype.args.params:
                if isinstance(p, c_ast.Decl) and p.name:
                    self.params[p.name] = p.type
                    self.param_order.append(p.name)
                elif isinstance(p, c_ast.ID):  # K&R identifier list; types come below
                    self.params[p.name] = None
                    self.param_order.append(p.name)
        # K&R parameter declarations
        for p in fd.param_decls or []:
            if isinstance(p, c_ast.Decl) and p.name:
                self.params[p.name] = p.type
        for node in walk(fd.body):
            if isinstance(node, c_ast.Decl) and node.name and not isinstance(
                node.type, c_ast.FuncDecl
            ):
                if "static" in decl_storage(node):
                    self.local_statics[node.name] = node
                elif "extern" in decl_storage(node):
                    continue
                else:
                    self.locals[node.name] = node.type

    @staticmethod
    def param_names(fd: c_ast.FuncDef) -> list[str]:
        ftype = fd.decl.type
        if isinstance(ftype, c_ast.FuncDecl) and ftype.args is not None:
            return [p.name if isinstance(p, c_ast.Decl | c_ast.ID) else ""
                    for p in ftype.args.params]
        return []

    def kind(self, name: str) -> str:
        """local | param | static-local | global | static-global | function | enum | unknown"""
        if name in self.locals:
            return "local"
        if name in self.local_statics:
            return "static-local"
        if name in self.params:
            return "param"
        if name in self.idx.enumerators:
            return "enum"
        g = self.idx.globals.get(name)
        if g is not None:
            return "static-global" if "static" in decl_storage(g) else "global"
        if name in self.idx.functions or name in self.idx.prototypes:
            return "function"
        return "unknown"

    def type_of_name(self, name: str) -> c_ast.Node | None:
        """Declared type of a name in this function's scope (array parameters are pointers)."""
        if name in self.locals:
            return self.locals[name]
        if name in self.local_statics:
            return self.local_statics[name].type
        if name in self.params:
            t = self.params[name]
            # array parameters are pointers
            if isinstance(t, c_ast.ArrayDecl):
                return c_ast.PtrDecl([], t.type)
            return t
        g = self.idx.globals.get(name)
        if g is not None:
            return g.type
        fd = self.idx.functions.get(name)
        if fd is not None:
            return fd.decl.type
        proto = self.idx.prototypes.get(name)
        if proto is not None:
            return proto.type
        return None

    def type_of(self, e: c_ast.Node | None) -> c_ast.Node | None:
        """Best-effort static type of an expression; None when unknown."""
        idx = self.idx
        if e is None:
            return None
        if isinstance(e, c_ast.ID):
            return self.type_of_name(e.name)
        if isinstance(e, c_ast.StructRef):
            base = self.type_of(e.name)
            if e.type == "->":
                base = pointee(base, idx)
            rec = strip_typedefs(base, idx)
            return record_fields(rec).get(e.field.name)
        if isinstance(e, c_ast.ArrayRef):
            return pointee(self.type_of(e.name), idx)
        if isinstance(e, c_ast.UnaryOp):
            if e.op == "*":
                return pointee(self.type_of(e.expr), idx)
            if e.op == "&":
                inner = self.type_of(e.expr)
                return c_ast.PtrDecl([], inner) if inner is not None else None
            if e.op in ("++", "--", "p++", "p--", "+", "-"):
                return self.type_of(e.expr)
            return None
        if isinstance(e, c_ast.Cast):
            return e.to_type.type
        if isinstance(e, c_ast.FuncCall):
            ft = strip_typedefs(self.type_of(e.name), idx)
            if isinstance(ft, c_ast.PtrDecl):
                ft = strip_typedefs(ft.type, idx)
            if isinstance(ft, c_ast.FuncDecl):
                return ft.type
            return None
        if isinstance(e, c_ast.BinaryOp) and e.op in ("+", "-"):
            lt, rt = self.type_of(e.left), self.type_of(e.right)
            if is_pointerish(lt, idx):
                return lt if not is_array(lt, idx) else c_ast.PtrDecl([], pointee(lt, idx))
            if is_pointerish(rt, idx) and e.op == "+":
                return rt if not is_array(rt, idx) else c_ast.PtrDecl([], pointee(rt, idx))
            return None
        if isinstance(e, c_ast.TernaryOp):
            return self.type_of(e.iftrue) or self.type_of(e.iffalse)
        if isinstance(e, c_ast.Assignment):
            return self.type_of(e.lvalue)
        if isinstance(e, c_ast.ExprList) and e.exprs:
            return self.type_of(e.exprs[-1])
        if isinstance(e, c_ast.Constant) and e.type == "string":
            return c_ast.PtrDecl([], c_ast.TypeDecl(None, [], None, c_ast.IdentifierType(["char"])))
        return None


def walk(node: c_ast.Node | None):
    """Pre-order iteration over a subtree (iterative: large functions recurse deeply)."""
    if node is None:
        return
    stack = [node]
    pop = stack.pop
    extend = stack.extend
    while stack:
        n = pop()
        yield n
        kids = list(n)
        if kids:
            kids.reverse()
            extend(kids)
