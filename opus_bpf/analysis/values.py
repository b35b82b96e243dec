"""Return-value sets. A function's callers were written against the values the old version can
return; a patched version that can return something new (a new error code) may break them.
Values are compared as constants when they fold (so -EINVAL and -22 agree, NULL and 0 agree),
otherwise as normalised expression text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycparser import c_ast, c_generator

if TYPE_CHECKING:
    from .tuindex import Scope, TUIndex

_GEN = c_generator.CGenerator()

PointsTo = Callable[[c_ast.Node], set[str]]


def c_text(node: c_ast.Node | None) -> str:
    if node is None:
        return ""
    try:
        return _GEN.visit(node)
    except Exception:  # generator gaps on exotic nodes must not stop the analysis
        return type(node).__name__


def _int_literal(v: str) -> int | None:
    s = v.lower().rstrip("ul")
    try:
        if s.startswith("0x"):
            return int(s, 16)
        if s.startswith("0b"):
            return int(s, 2)
        if len(s) > 1 and s.startswith("0"):
            return int(s, 8)
        return int(s)
    except ValueError:
        return None


def _char_literal(v: str) -> int | None:
    body = v[v.find("'") + 1 : -1]
    esc = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, "'": 39, '"': 34, "a": 7, "b": 8,
           "f": 12, "v": 11}
    if len(body) == 1:
        return ord(body)
    if body.startswith("\\"):
        if body[1:] in esc:
            return esc[body[1:]]
        if body[1] == "x":
            return int(body[2:], 16)
        if body[1:].isdigit():
            return int(body[1:], 8)
    return None


_BIN = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: int(a / b) if b else None, "%": lambda a, b: a % b if b else None,
    "<<": lambda a, b: a << b if 0 <= b < 128 else None, ">>": lambda a, b: a >> b,
    "&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), ">": lambda a, b: int(a > b),
    "<=": lambda a, b: int(a <= b), ">=": lambda a, b: int(a >= b),
    "&&": lambda a, b: int(bool(a and b)), "||": lambda a, b: int(bool(a or b)),
}


def const_eval(e: c_ast.Node | None, idx: TUIndex | None = None) -> int | None:
    """Fold an integer constant expression (enumerators included); None when not constant."""
    if e is None:
        return None
    if isinstance(e, c_ast.Constant):
        if e.type == "char":
            return _char_literal(e.value)
        if e.type in ("int", "unsigned int", "long int", "long long int", "unsigned long int",
                      "unsigned long long int") or e.type.endswith("int"):
            return _int_literal(e.value)
        return None
    if isinstance(e, c_ast.ID):
        if idx is not None and e.name in idx.enumerators:
            return idx.enumerators[e.name]
        return None
    if isinstance(e, c_ast.Cast):
        return const_eval(e.expr, idx)
    if isinstance(e, c_ast.UnaryOp):
        v = const_eval(e.expr, idx)
        if v is None:
            return None
        return {"-": -v, "+": v, "~": ~v, "!": int(not v)}.get(e.op)
    if isinstance(e, c_ast.BinaryOp):
        a, b = const_eval(e.left, idx), const_eval(e.right, idx)
        if a is None or b is None or e.op not in _BIN:
            return None
        try:
            return _BIN[e.op](a, b)
        except (ValueError, OverflowError):
            return None
    if isinstance(e, c_ast.TernaryOp):
        c = const_eval(e.cond, idx)
        if c is None:
            return None
        return const_eval(e.iftrue if c else e.iffalse, idx)
    return None


_BOOL_OPS = frozenset(("==", "!=", "<", ">", "<=", ">=", "&&", "||"))


@dataclass(frozen=True)
class RetValue:
    key: str  # what is compared between old and new
    shown: str  # what a person reads
    node: c_ast.Node  # where it comes from (return statement or assignment)


def _value_key(e: c_ast.Node, scope: Scope, points_to: PointsTo | None) -> tuple[str, str]:
    """The comparable identity of a returned expression, and how to show it."""
    v = const_eval(e, scope.idx)
    if v is not None:
        return f"const:{v}", c_text(e) if c_text(e) == str(v) else f"{c_text(e)} (= {v})"
    if points_to is not None:
        from .tuindex import is_pointerish

        if is_pointerish(scope.type_of(e), scope.idx):
            # a pointer result is characterised by what it may point to, not by its spelling
            targets = points_to(e)
            if targets:
                return "ptr:" + "|".join(sorted(targets)), f"{c_text(e)} (a pointer into " \
                    f"{', '.join(sorted(targets))})"
    if isinstance(e, c_ast.FuncCall):
        # any value the callee returns; the arguments do not widen that set
        return f"call:{c_text(e.name)}", f"result of {c_text(e.name)}()"
    if isinstance(e, c_ast.Cast):
        return _value_key(e.expr, scope, points_to)
    text = c_text(e)
    key = text
    for i, p in enumerate(scope.param_order):
        # parameters by position: renaming a parameter does not change what is returned
        key = re.sub(rf"\b{re.escape(p)}\b", f"$arg{i}", key)
    return f"expr:{key}", text


def return_values(scope: Scope, points_to: PointsTo | None = None) -> list[RetValue]:
    """Every value a function can return; a returned local expands to what was stored in it."""
    from .tuindex import walk

    fd = scope.fd
    assigns: dict[str, list[c_ast.Node]] = {}
    for n in walk(fd.body):
        if isinstance(n, c_ast.Decl) and n.name in scope.locals and n.init is not None:
            assigns.setdefault(n.name, []).append(n)
        elif isinstance(n, c_ast.Assignment) and isinstance(n.lvalue, c_ast.ID):
            assigns.setdefault(n.lvalue.name, []).append(n)
        elif (
            isinstance(n, c_ast.UnaryOp)
            and n.op in ("++", "--", "p++", "p--")
            and isinstance(n.expr, c_ast.ID)
        ):
            assigns.setdefault(n.expr.name, []).append(n)

    out: list[RetValue] = []

    def expand(e: c_ast.Node, origin: c_ast.Node, seen: frozenset[str]) -> None:
        if isinstance(e, c_ast.ID) and e.name in scope.locals and e.name not in seen:
            srcs = assigns.get(e.name, [])
            if not srcs:
                out.append(RetValue(f"uninit:{e.name}", f"{e.name} (never assigned)", origin))
            for s in srcs:
                if isinstance(s, c_ast.Decl):
                    if isinstance(s.init, c_ast.InitList):
                        out.append(RetValue(f"expr:{e.name}", e.name, s))
                    else:
                        expand(s.init, s, seen | {e.name})
                elif isinstance(s, c_ast.Assignment) and s.op == "=":
                    expand(s.rvalue, s, seen | {e.name})
                else:
                    out.append(
                        RetValue(f"computed:{e.name}", f"{e.name} (computed in place)", s)
                    )
            return
        if const_eval(e, scope.idx) is None and (
            (isinstance(e, c_ast.BinaryOp) and e.op in _BOOL_OPS)
            or (isinstance(e, c_ast.UnaryOp) and e.op == "!")
        ):
            # a truth value: 0 or 1, however it is spelled
            out.append(RetValue("const:0", f"{c_text(e)} (0 or 1)", origin))
            out.append(RetValue("const:1", f"{c_text(e)} (0 or 1)", origin))
            return
        if isinstance(e, c_ast.TernaryOp) and const_eval(e.cond, scope.idx) is None:
            expand(e.iftrue, origin, seen)
            expand(e.iffalse, origin, seen)
            return
        key, shown = _value_key(e, scope, points_to)
        out.append(RetValue(key, shown, origin))

    for n in walk(fd.body):
        if isinstance(n, c_ast.Return) and n.expr is not None:
            expand(n.expr, n, frozenset())
    return out
