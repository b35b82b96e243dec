"""Writes to non-local state, per function, with a bounded interprocedural summary.

A location is (root kind, root name, access path). Root kinds: local (dropped: the frame dies
with the call), param (memory the caller handed in: out-parameters), global, static (file
static or function-local static), heap, unknown (a pointer whose origin we cannot see, e.g. a
call result) and call (an external call with unknown effects). The path collapses subscripts
("[]" = through a pointer or into an array), so `p->buf[i]` and `p->buf[j]` are one location.

Local pointers are followed flow-insensitively: every value ever stored into a local is a
possible target when it is dereferenced (aliasing through local pointers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pycparser import c_ast

from . import libtable
from .tuindex import Scope, TUIndex, is_array, is_pointerish, walk
from .values import c_text

MAX_PATH = 8

Loc = tuple[str, str, tuple[str, ...]]


# library writers whose written bytes cannot be pointers we would need to follow
_BYTE_WRITERS = frozenset(
    [
        "memset", "bzero", "explicit_bzero", "sprintf", "snprintf", "vsprintf", "vsnprintf",
        "read", "pread", "recv", "recvfrom", "fgets", "gets", "fread", "strcpy", "strncpy",
        "strcat", "strncat", "strlcpy", "strlcat", "stpcpy", "stpncpy", "sscanf", "fscanf",
        "scanf", "time", "gettimeofday", "clock_gettime", "stat", "fstat", "lstat", "pipe",
        "inet_pton", "inet_ntop", "__builtin_memset", "__read_chk", "__fgets_chk",
        "__snprintf_chk", "__sprintf_chk"
    ]
)


def render(loc: Loc) -> str:
    """`param p ('[]', '.next', '[]', '.val')` -> `p->next->val`."""
    kind, name, path = loc
    if kind == "call":
        return f"{name}()"
    s = name
    i = 0
    while i < len(path):
        el = path[i]
        if el == "[]" and i + 1 < len(path) and path[i + 1].startswith("."):
            s = f"{s}->{path[i + 1][1:]}"
            i += 2
            continue
        if el == "[]":
            s = f"{s}[]"
        elif el == "...":
            s = f"{s}->..."
        elif i > 0 and path[i - 1] == "...":
            s = f"{s}->{el[1:]}" if el.startswith(".") else f"{s}{el}"
        else:
            s = f"{s}{el}"
        i += 1
    return s


def _extend(loc: Loc, more: Iterable[str]) -> Loc:
    """Append access steps. A field that repeats (p = p->next in a loop) folds the path back to
    its first occurrence plus "..." (any number of further links), so paths stay finite and
    list walks do not produce one location per depth."""
    path = list(loc[2])
    for el in more:
        if el.startswith(".") and el in path:
            i = path.index(el)
            path = path[: i + 1] + ["..."]
            continue
        if el == "[]" and path and path[-1] == "...":
            continue  # "..." already means "through any number of links"
        path.append(el)
    if len(path) > MAX_PATH:
        path = path[:MAX_PATH] + ["..."]
    return (loc[0], loc[1], tuple(path))


@dataclass(frozen=True)
class Effect:
    loc: Loc
    via: str  # direct | alias:<local> | call:<helper> | library:<fn>
    node: c_ast.Node
    detail: str = ""  # for calls: what the callee does and where
    value: str = ""  # what is stored: normalised expression, "+=1", "call:memcpy", "*" = any


def covered(loc: Loc, old: set[Loc]) -> bool:
    """A write is not new if the old version wrote the same location or an enclosing object
    (without going through another pointer: writing `p->next` is not writing `*p->next`)."""
    if loc in old:
        return True
    kind, name, path = loc
    return any("[]" not in path[i:] and (kind, name, path[:i]) in old for i in range(len(path)))


class Summaries(dict[str, list[Effect]]):
    """Per TU function: its non-local writes, and (`returns`) where a pointer it returns may
    point, both in the callee's terms (parameters by name)."""

    def __init__(self, external: External | None = None) -> None:
        super().__init__()
        self.returns: dict[str, set[Loc]] = {}
        self.external = external


class External:
    """Functions of other TUs of the program (see xtu.ExternalResolver): `lookup(name)` gives
    (writes, returned-pointer targets, parameter names) in the callee's terms, or None."""

    def lookup(self, name: str) -> tuple[list[Effect], set[Loc], list[str]] | None:
        return None


class FunctionEffects:
    """Flow-insensitive points-to facts and the non-local writes of one function."""

    def __init__(self, idx: TUIndex, fd: c_ast.FuncDef, summaries: dict[str, list[Effect]]):
        self.idx = idx
        self.scope = Scope(idx, fd)
        self.summaries = summaries
        self.returns_of: dict[str, set[Loc]] = getattr(summaries, "returns", {})
        self.external: External | None = getattr(summaries, "external", None)
        self.contents: dict[str, set[Loc]] = {}
        self._defs: dict[str, set[str]] | None = None
        self.final = False
        for p in self.scope.params:
            self.contents[p] = {("param", p, ("[]",))}
        self._solve()
        self.final = True
        self.effects = self._writes()
        self.returns: set[Loc] = set()
        for n in walk(fd.body):
            if isinstance(n, c_ast.Return) and n.expr is not None and self._is_ptr(n.expr):
                self.returns |= {loc for loc in self.val(n.expr) if loc[0] != "local"}

    # ---- points-to ----------------------------------------------------------------------
    def lv(self, e: c_ast.Node) -> set[Loc]:
        """Locations an lvalue expression denotes."""
        sc = self.scope
        if isinstance(e, c_ast.ID):
            k = sc.kind(e.name)
            if k in ("local", "param"):
                return {("local", e.name, ())}
            if k == "static-local":
                return {("static", f"{sc.fname}::{e.name}", ())}
            if k == "static-global":
                return {("static", e.name, ())}
            if k in ("function", "enum"):
                return set()
            return {("global", e.name, ())}
        if isinstance(e, c_ast.StructRef):
            base = self.lv(e.name) if e.type == "." else self.val(e.name)
            return {_extend(loc, ("." + e.field.name,)) for loc in base}
        if isinstance(e, c_ast.ArrayRef):
            # i[p] is legal C: whichever side is the pointer is the base
            extra = self.val(e.subscript) if self._is_ptr(e.subscript) else set()
            return self.val(e.name) | extra
        if isinstance(e, c_ast.UnaryOp) and e.op == "*":
            return self.val(e.expr)
        if isinstance(e, c_ast.Cast):
            return self.lv(e.expr)
        if isinstance(e, c_ast.CompoundLiteral):
            return {("local", "<compound literal>", ())}
        if isinstance(e, c_ast.ExprList) and e.exprs:
            return self.lv(e.exprs[-1])
        if isinstance(e, c_ast.TernaryOp):
            return self.lv(e.iftrue) | self.lv(e.iffalse)
        return {("unknown", c_text(e), ())}

    def _is_ptr(self, e: c_ast.Node) -> bool:
        """Could this operand carry a pointer? Unknown types count (conservative)."""
        if isinstance(e, c_ast.Constant):
            return e.type == "string"
        return is_pointerish(self.scope.type_of(e), self.idx) is not False

    def pointee(self, locs: Iterable[Loc]) -> set[Loc]:
        """Where pointers stored at these locations may point."""
        out: set[Loc] = set()
        for loc in locs:
            if loc[0] == "local":
                got = self.contents.get(loc[1])
                if got:
                    out |= got
                elif self.final:
                    out.add(("unknown", f"{loc[1]} (never set)", ()))
            else:
                out.add(_extend(loc, ("[]",)))
        return out

    def val(self, e: c_ast.Node | None) -> set[Loc]:
        """Where a pointer-valued expression may point."""
        if e is None:
            return set()
        sc = self.scope
        if isinstance(e, c_ast.Constant):
            return {("local", "<literal>", ())} if e.type == "string" else set()
        if isinstance(e, c_ast.ID | c_ast.StructRef | c_ast.ArrayRef) or (
            isinstance(e, c_ast.UnaryOp) and e.op == "*"
        ):
            if isinstance(e, c_ast.ID) and sc.kind(e.name) in ("function", "enum"):
                return set()
            if is_array(sc.type_of(e), self.idx):
                return self.lv(e)
            return self.pointee(self.lv(e))
        if isinstance(e, c_ast.UnaryOp):
            if e.op == "&":
                return self.lv(e.expr)
            if e.op in ("++", "--", "p++", "p--"):
                return self.val(e.expr)
            return set()
        if isinstance(e, c_ast.BinaryOp):
            if e.op not in ("+", "-"):
                return set()
            out: set[Loc] = set()
            for side in (e.left, e.right):
                if self._is_ptr(side):
                    out |= self.val(side)
            return out
        if isinstance(e, c_ast.Cast):
            return self.val(e.expr)
        if isinstance(e, c_ast.TernaryOp):
            return self.val(e.iftrue) | self.val(e.iffalse)
        if isinstance(e, c_ast.Assignment):
            return self.val(e.rvalue)
        if isinstance(e, c_ast.ExprList):
            return self.val(e.exprs[-1]) if e.exprs else set()
        if isinstance(e, c_ast.FuncCall):
            name = e.name.name if isinstance(e.name, c_ast.ID) else None
            args = e.args.exprs if e.args is not None else []
            out = set()
            if name in ("__errno_location", "__error", "___errno"):
                # errno expands to (*__errno_location()): name the location
                return {("global", "errno", ())}
            if name in libtable.ALLOCATORS:
                out.add(("heap", "heap", ()))
            if name in libtable.RETURNS_ARG and len(args) > libtable.RETURNS_ARG[name]:
                out |= self.val(args[libtable.RETURNS_ARG[name]])
            if name in self.returns_of and self.returns_of[name]:
                params = Scope.param_names(self.idx.functions[name])
                out |= self._map_to_caller(name, self.returns_of[name], params, args)
            elif (not out and name and name not in self.idx.functions
                  and self.external is not None):
                ext = self.external.lookup(name)
                if ext is not None and ext[1]:
                    out |= self._map_to_caller(name, ext[1], ext[2], args)
            if not out:
                out.add(("unknown", f"{c_text(e.name)}()", ()))
            return out
        if isinstance(e, c_ast.CompoundLiteral):
            return {("local", "<compound literal>", ())}
        if isinstance(e, c_ast.InitList):
            out = set()
            for x in e.exprs:
                out |= self.val(x.expr if isinstance(x, c_ast.NamedInitializer) else x)
            return out
        return set()

    def _solve(self) -> None:
        """Fixed point of what each local may hold."""
        stores: list[tuple[c_ast.Node | None, c_ast.Node, str]] = []
        for n in walk(self.scope.fd.body):
            if isinstance(n, c_ast.Decl) and n.init is not None and n.name in self.scope.locals:
                stores.append((None, n, "init"))
            elif isinstance(n, c_ast.Assignment) and n.op == "=":
                stores.append((n.lvalue, n.rvalue, "="))
            elif isinstance(n, c_ast.FuncCall) and n.args is not None:
                stores.append((None, n, "call"))
        for _ in range(20):
            changed = False
            for lhs, rhs, how in stores:
                if how == "init":
                    targets = {("local", rhs.name, ())}
                    vals = self.val(rhs.init)
                elif how == "=":
                    targets = self.lv(lhs)
                    vals = self.val(rhs)
                else:
                    targets, vals = self._call_stores(rhs)
                for t in targets:
                    if t[0] != "local" or not vals:
                        continue
                    cur = self.contents.setdefault(t[1], set())
                    if not vals <= cur:
                        cur |= vals
                        changed = True
            if not changed:
                break

    def _call_stores(self, call: c_ast.FuncCall) -> tuple[set[Loc], set[Loc]]:
        """A call handed the address of a local may store a pointer into it."""
        name = call.name.name if isinstance(call.name, c_ast.ID) else None
        if name in libtable.NO_STATE or name in _BYTE_WRITERS:
            return set(), set()
        args = call.args.exprs
        targets: set[Loc] = set()
        for a in args:
            if isinstance(a, c_ast.UnaryOp) and a.op == "&":
                targets |= {t for t in self.lv(a.expr) if t[0] == "local"}
        if not targets:
            return set(), set()
        if name in ("memcpy", "memmove", "__builtin_memcpy") and len(args) > 1:
            return targets, self.val(args[1])
        return targets, {("unknown", f"{name or c_text(call.name)}()", ())}

    # ---- writes -------------------------------------------------------------------------
    def _base_local(self, e: c_ast.Node) -> str | None:
        """The local pointer variable an lvalue is reached through, if any (for `via`)."""
        deref = False
        while True:
            if isinstance(e, c_ast.StructRef):
                deref = deref or e.type == "->"
                e = e.name
            elif isinstance(e, c_ast.ArrayRef):
                deref = True
                e = e.name
            elif isinstance(e, c_ast.UnaryOp) and e.op == "*":
                deref = True
                e = e.expr
            elif isinstance(e, c_ast.Cast):
                e = e.expr
            elif isinstance(e, c_ast.BinaryOp):
                e = e.left
            else:
                break
        if deref and isinstance(e, c_ast.ID) and self.scope.kind(e.name) == "local":
            return e.name
        return None

    def _norm(self, e: c_ast.Node) -> str:
        """Expression text with parameters by position (a rename is not a change)."""
        text = c_text(e)
        for i, p in enumerate(self.scope.param_order):
            if p in text:
                text = re.sub(rf"\b{re.escape(p)}\b", f"$arg{i}", text)
        return text

    def _stored_value(self, n: c_ast.Node) -> str:
        """What a write stores; x++, x += 1 and x = x + 1 all read "+=1"."""
        if isinstance(n, c_ast.UnaryOp):
            return "+=1" if "+" in n.op else "-=1"
        assert isinstance(n, c_ast.Assignment)
        r = n.rvalue
        while isinstance(r, c_ast.Assignment) and r.op == "=":
            r = r.rvalue  # a = b = v stores v in both
        if n.op != "=":
            return f"{n.op}{self._norm(r)}"
        if (isinstance(r, c_ast.BinaryOp) and r.op in ("+", "-", "|", "&", "^", "*", "<<", ">>")
                and self._norm(r.left) == self._norm(n.lvalue)):
            return f"{r.op}={self._norm(r.right)}"
        if isinstance(r, c_ast.ID) and r.name in self._local_defs():
            # storing a variable: what was put into the variable is what gets stored (a clamp
            # added before `p->len = n` changes the store)
            return "=" + "|".join(sorted(self._local_defs()[r.name]))
        return f"={self._norm(r)}"

    def _local_defs(self) -> dict[str, set[str]]:
        """Values assigned to each local (and each reassigned parameter), one level deep."""
        if self._defs is None:
            defs: dict[str, set[str]] = {}
            for n in walk(self.scope.fd.body):
                if isinstance(n, c_ast.Decl) and n.name in self.scope.locals:
                    defs.setdefault(n.name, set()).add(
                        self._norm(n.init) if n.init is not None else "<unset>")
                elif isinstance(n, c_ast.Assignment) and isinstance(n.lvalue, c_ast.ID):
                    name = n.lvalue.name
                    if name in self.scope.locals or name in self.scope.params:
                        r = n.rvalue
                        while isinstance(r, c_ast.Assignment) and r.op == "=":
                            r = r.rvalue
                        text = self._norm(r) if n.op == "=" else f"<{n.op}{self._norm(r)}>"
                        defs.setdefault(name, set()).add(text)
                elif (isinstance(n, c_ast.UnaryOp) and n.op in ("++", "--", "p++", "p--")
                      and isinstance(n.expr, c_ast.ID)):
                    defs.setdefault(n.expr.name, set()).add("<counted>")
            for p in self.scope.params:
                if p in defs:
                    defs[p].add(f"$arg{self.scope.param_order.index(p)}"
                                if p in self.scope.param_order else p)
            self._defs = defs
        return self._defs

    def _writes(self) -> list[Effect]:
        """Every non-local store of the body: assignments, ++/--, and calls."""
        out: list[Effect] = []
        for n in walk(self.scope.fd.body):
            target = None
            if isinstance(n, c_ast.Assignment):
                target = n.lvalue
            elif isinstance(n, c_ast.UnaryOp) and n.op in ("++", "--", "p++", "p--"):
                target = n.expr
            if target is not None:
                alias = self._base_local(target)
                via = f"alias:{alias}" if alias else "direct"
                value = self._stored_value(n)
                for loc in sorted(self.lv(target)):
                    if loc[0] != "local":
                        out.append(Effect(loc, via, n, value=value))
            elif isinstance(n, c_ast.FuncCall):
                out.extend(self._call_effects(n))
        return out

    def _call_effects(self, call: c_ast.FuncCall) -> list[Effect]:
        """What a call writes: TU helpers by summary, libc by table, the rest unknown."""
        name = call.name.name if isinstance(call.name, c_ast.ID) else None
        args = call.args.exprs if call.args is not None else []
        sc = self.scope
        if name is None or sc.kind(name) not in ("function", "unknown"):
            callee = c_text(call.name)
            return [Effect(("call", f"(*{callee})", ()), "call", call,
                           f"indirect call through {callee}", value="call")]
        if name in self.summaries:
            return self._apply_summary(name, call, args)
        out: list[Effect] = []
        if name in libtable.GLOBAL_STATE:
            what = libtable.GLOBAL_STATE[name]
            out.append(Effect(("global", f"<{what}>", ()), f"library:{name}", call,
                              f"{name}() changes {what}", value=f"call:{name}"))
        if name in libtable.WRITES_THROUGH:
            for spec in libtable.WRITES_THROUGH[name]:
                idxs = (
                    range(int(spec.split(":")[1]), len(args)) if isinstance(spec, str)
                    else [spec]
                )
                for i in idxs:
                    if i >= len(args):
                        continue
                    for loc in sorted(self.val(args[i])):
                        if loc[0] != "local":
                            out.append(Effect(loc, f"library:{name}", call,
                                              f"{name}() writes through argument {i + 1}",
                                              value=f"call:{name}"))
            return out
        if out or name in libtable.NO_STATE:
            return out
        ext = self.external.lookup(name) if self.external is not None else None
        if ext is not None:
            effects, _, params = ext
            return self._map_effects(name, effects, params, call, args, other_tu=True)
        return [Effect(("call", name, ()), "call", call,
                       f"{name}() is not defined in this file; its effects are unknown",
                       value="call")]

    def _map_to_caller(self, name: str, locs: set[Loc], params: list[str],
                       args: list) -> set[Loc]:
        """Callee locations in caller terms: its parameters become what the arguments point to."""
        out: set[Loc] = set()
        for loc in locs:
            if loc[0] != "param":
                out.add(loc)
                continue
            i = params.index(loc[1]) if loc[1] in params else len(args)
            if i >= len(args):
                out.add(("unknown", f"{name}() argument", loc[2]))
                continue
            for o in self.val(args[i]):
                out.add(_extend(o, loc[2][1:]))
        return out

    def _apply_summary(self, name: str, call: c_ast.FuncCall, args: list) -> list[Effect]:
        """A helper's writes in caller terms: its parameters become the arguments' targets."""
        params = Scope.param_names(self.idx.functions[name])
        return self._map_effects(name, self.summaries[name], params, call, args)

    def _map_effects(self, name: str, callee: list[Effect], params: list[str],
                     call: c_ast.FuncCall, args: list, other_tu: bool = False) -> list[Effect]:
        out = []
        for eff in callee:
            where = eff.node.coord
            at = f"{where.file}:{where.line}" if where is not None else "?"
            verb = "calls" if eff.loc[0] == "call" else "writes"
            why = f"{name}() {verb} {render(eff.loc)} ({at})"
            if other_tu:
                why += ", in another file of the program"
            if eff.loc[0] == "param":
                try:
                    i = params.index(eff.loc[1])
                except ValueError:
                    i = len(args)
                if i >= len(args):
                    out.append(Effect(("unknown", f"{name}() argument", eff.loc[2]),
                                      f"call:{name}", call, why, eff.value))
                    continue
                for o in sorted(self.val(args[i])):
                    if o[0] != "local":
                        out.append(Effect(_extend(o, eff.loc[2][1:]), f"call:{name}", call,
                                          why, eff.value))
            else:
                out.append(Effect(eff.loc, f"call:{name}", call, why, eff.value))
        return out


def summarize(idx: TUIndex, roots: Iterable[str], external: External | None = None
              ) -> Summaries:
    """Non-local effects of every TU function reachable from `roots`, callees first.

    Strongly connected components (recursion) iterate to a fixed point, bounded at 6 rounds.
    """
    graph: dict[str, list[str]] = {}
    todo = [r for r in roots if r in idx.functions]
    while todo:
        f = todo.pop()
        if f in graph:
            continue
        callees = sorted({
            n.name.name for n in walk(idx.functions[f].body)
            if isinstance(n, c_ast.FuncCall) and isinstance(n.name, c_ast.ID)
            and n.name.name in idx.functions
        })
        graph[f] = callees
        todo.extend(c for c in callees if c not in graph)

    summaries = Summaries(external)
    for scc in _sccs(graph):
        for f in scc:
            summaries[f] = []
            summaries.returns[f] = set()
        for _ in range(6):
            changed = False
            for f in scc:
                fe = FunctionEffects(idx, idx.functions[f], summaries)
                effs = _dedup(fe.effects)
                if {(e.loc, e.value) for e in effs} != {(e.loc, e.value) for e in summaries[f]}:
                    changed = True
                if fe.returns != summaries.returns[f]:
                    changed = True
                summaries[f] = effs
                summaries.returns[f] = fe.returns
            if not changed or len(scc) == 1 and scc[0] not in graph[scc[0]]:
                break
    return summaries


MAX_VALUES = 8


def _dedup(effs: list[Effect]) -> list[Effect]:
    """One effect per (location, stored value); a location stored with many different values
    keeps one effect with value "*" (any), which keeps summaries small."""
    by_loc: dict[Loc, dict[str, Effect]] = {}
    for e in effs:
        by_loc.setdefault(e.loc, {}).setdefault(e.value, e)
    out: list[Effect] = []
    for vals in by_loc.values():
        if len(vals) > MAX_VALUES or "*" in vals:
            first = next(iter(vals.values()))
            out.append(Effect(first.loc, first.via, first.node, first.detail, "*"))
        else:
            out.extend(vals.values())
    return out


def _sccs(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan, iterative; components come out callees-first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on.add(v)
            recurse = False
            succ = graph.get(v, [])
            while i < len(succ):
                w = succ[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
    return out
