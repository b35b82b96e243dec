"""OPUS safety rules over an old/new pair of translation units.

OPUS (Altekar et al., USENIX Security 2005) swaps function bodies in a running process. A body
swap is safe when the new body touches the same state and honours the same contract as the old
one; everything else needs a person (review) or a different mechanism (unsupported).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from pycparser import c_ast

from . import libtable
from .effects import Effect, External, FunctionEffects, Loc, covered, render, summarize
from .report import Finding, FunctionResult, Report, Verdict
from .source import fingerprint, noreturn_declared
from .tuindex import Scope, TUIndex, Unit, as_unit, walk
from .values import c_text, return_values

TypeKey = tuple[str, str]

_WRITE_KIND = {
    "global": "write-global", "static": "write-static", "param": "write-param",
    "heap": "write-heap", "unknown": "write-pointer", "call": "unknown-call",
}


def _add_global(report: Report, finding: Finding, users: list[str] | None = None) -> None:
    """One finding per (kind, place) across TUs: a changed header shows up in each of them."""
    for g in report.global_findings:
        if (g.kind, g.file, g.line, g.target) == (finding.kind, finding.file, finding.line,
                                                  finding.target):
            if users:
                g.used_by = sorted(set(g.used_by or []) | set(users))
                g.message = _type_message(g.target or "", g.used_by)
            return
    if users:
        finding.used_by = sorted(users)
    report.global_findings.append(finding)


def _type_message(target: str, users: list[str]) -> str:
    shown = ", ".join(users[:6]) + (f" and {len(users) - 6} more" if len(users) > 6 else "")
    return (f"definition of {target} changed and is used by {shown}; old code and live "
            "objects keep the old layout/values, so a body swap cannot change it")


def analyze_patch(old_tus: Any, new_tus: Any, *, old_root: str | os.PathLike[str] | None = None,
                  new_root: str | os.PathLike[str] | None = None,
                  thread_routines: Iterable[str] = (),
                  externals: tuple[External | None, External | None] = (None, None)
                  ) -> Report:
    """Analyse every changed function of each (old, new) TU pair.

    Accepts single TUs, sequences (paired by path when every TU has one, else by position) or
    mappings path -> TU; a TU is a cfront TranslationUnit, a pycparser FileAST or a `Unit`.
    `old_root`/`new_root` are the directories the TUs were parsed in (cfront's `cwd`): with
    them the report quotes source lines and the macro and GNU-noreturn rules can read the raw
    text. `thread_routines` names start routines known from elsewhere (other TUs of the
    program; analyze_tree scans the whole tree for pthread_create calls). `externals` are
    (old, new) resolvers for functions of other TUs (see xtu.py); without them such calls are
    `unknown-call`.
    """
    report = Report()
    extra_threads = set(thread_routines)
    for name, old, new in _pair(old_tus, new_tus):
        report.files.append(name)
        ou, nu = as_unit(old), as_unit(new)
        if old_root is not None and ou.root is None:
            ou.root = str(old_root)
        if new_root is not None and nu.root is None:
            nu.root = str(new_root)
        _analyze_pair(ou, nu, report, extra_threads, externals)
    _dedup_functions(report)
    return report


def _dedup_functions(report: Report) -> None:
    """A function from a shared header (a static inline) shows up once per TU: keep one."""
    seen: dict[tuple, FunctionResult] = {}
    out = []
    for fr in report.functions:
        key = (fr.name, fr.file, fr.line, fr.status)
        if key in seen:
            continue
        seen[key] = fr
        out.append(fr)
    # changed functions in source order, then added, then removed
    order = {"changed": 0, "preprocessed-only": 0, "added": 1, "removed": 2}
    out.sort(key=lambda fr: (order.get(fr.status, 3), fr.file or "", fr.line or 0))
    report.functions = out


def _pair(old_tus: Any, new_tus: Any) -> list[tuple[str, Any, Any]]:
    """Match old and new TUs: by key, by path when all have one, else by position."""
    if isinstance(old_tus, Mapping) and isinstance(new_tus, Mapping):
        return [(k, old_tus[k], new_tus[k]) for k in old_tus if k in new_tus]
    single = (c_ast.FileAST, Unit)
    if isinstance(old_tus, single) or hasattr(old_tus, "ast"):
        old_tus, new_tus = [old_tus], [new_tus]
    olds, news = list(old_tus), list(new_tus)
    opaths = [as_unit(o).path for o in olds]
    npaths = [as_unit(n).path for n in news]
    if all(opaths) and all(npaths) and len(set(opaths)) == len(opaths):
        by_path = dict(zip(opaths, olds, strict=True))
        return [(p, by_path[p], n) for p, n in zip(npaths, news, strict=True) if p in by_path]
    if len(olds) != len(news):
        raise ValueError(f"{len(olds)} old TUs but {len(news)} new ones")
    out = []
    for i, (o, n) in enumerate(zip(olds, news, strict=True)):
        name = as_unit(n).path or as_unit(o).path or f"tu{i}"
        out.append((name, o, n))
    return out


def _coord(node: c_ast.Node | None) -> tuple[str | None, int | None]:
    """(file, line) of a node, file normalised so ./x.h and x.h are one place."""
    c = getattr(node, "coord", None)
    if c is None:
        return None, None
    return (os.path.normpath(c.file) if c.file else c.file), c.line


class _Side:
    """One version of the TU with the facts the rules ask about."""

    def __init__(self, unit: Unit) -> None:
        self.idx = TUIndex(unit)
        self.threads = _thread_routines(self.idx)
        self.summaries: dict[str, list[Effect]] = {}
        self._types: dict[TypeKey, c_ast.Node] | None = None
        self._refs: dict[str, set[TypeKey]] | None = None

    def types(self) -> dict[TypeKey, c_ast.Node]:
        if self._types is None:
            t: dict[TypeKey, c_ast.Node] = {}
            for (k, n), node in self.idx.records.items():
                t[(k.lower(), n)] = node
            for n, node in self.idx.enums.items():
                t[("enum", n)] = node
            for n, node in self.idx.typedefs.items():
                t[("typedef", n)] = node
            self._types = t
        return self._types

    def function_type_refs(self) -> dict[str, set[TypeKey]]:
        if self._refs is None:
            self._refs = {n: _type_refs(fd, self.idx, True) for n, fd in self.idx.functions.items()}
        return self._refs

    def code(self, node: c_ast.Node) -> str:
        """The source line a finding quotes (generated C when the file is not readable)."""
        f, ln = _coord(node)
        return self.idx.sources.line(f, ln) or c_text(node)

    def noreturn(self, name: str) -> bool:
        """Declared noreturn by keyword, C23 attribute, or GNU attribute in the raw text."""
        fd = self.idx.functions.get(name)
        decls = [d for d in (fd.decl if fd else None, self.idx.prototypes.get(name)) if d]
        for d in decls:
            if "_Noreturn" in (d.funcspec or []) or "noreturn" in (d.funcspec or []):
                return True
            for spec in d.attributes or []:
                for a in getattr(spec, "attributes", []) or []:
                    if a.name in ("noreturn", "__noreturn__", "_Noreturn"):
                        return True
            f, _ = _coord(d)
            if noreturn_declared(self.idx.sources.text(f), name):
                return True
        return False


def _thread_routines(idx: TUIndex) -> set[str]:
    """Functions handed to pthread_create/thrd_create, also through wrapper functions that
    pass one of their own parameters on as the start routine (a few levels deep)."""
    starters: dict[str, set[int]] = {k: {v} for k, v in libtable.THREAD_STARTERS.items()}
    calls: list[tuple[c_ast.FuncDef, c_ast.FuncCall]] = []
    for fd in idx.functions.values():
        for n in walk(fd.body):
            if isinstance(n, c_ast.FuncCall) and isinstance(n.name, c_ast.ID) and n.args:
                calls.append((fd, n))
    out: set[str] = set()
    for _ in range(5):
        grew = False
        for fd, n in calls:
            for pos in starters.get(n.name.name, ()):
                if len(n.args.exprs) <= pos:
                    continue
                a = n.args.exprs[pos]
                while isinstance(a, c_ast.Cast) or (isinstance(a, c_ast.UnaryOp) and a.op == "&"):
                    a = a.expr
                if not isinstance(a, c_ast.ID):
                    continue
                params = Scope.param_names(fd)
                if a.name in params:
                    k = params.index(a.name)
                    if k not in starters.setdefault(fd.decl.name, set()):
                        starters[fd.decl.name].add(k)
                        grew = True
                elif a.name in idx.functions or a.name in idx.prototypes:
                    out.add(a.name)
        if not grew:
            break
    return out


def _type_refs(node: c_ast.Node | None, idx: TUIndex, with_globals: bool) -> set[TypeKey]:
    """Type names a subtree mentions (struct tags, typedef names, enum constants)."""
    out: set[TypeKey] = set()
    for n in walk(node):
        if isinstance(n, c_ast.Struct | c_ast.Union) and n.name:
            out.add((type(n).__name__.lower(), n.name))
        elif isinstance(n, c_ast.Enum) and n.name:
            out.add(("enum", n.name))
        elif isinstance(n, c_ast.IdentifierType):
            for nm in n.names:
                if nm in idx.typedefs:
                    out.add(("typedef", nm))
        elif isinstance(n, c_ast.ID):
            owner = idx.enumerator_owner.get(n.name)
            if owner is not None:
                out.add(("enum", owner))
            elif with_globals and n.name in idx.globals:
                out |= _type_refs(idx.globals[n.name].type, idx, False)
    return out


def _affected_types(side: _Side, changed: set[TypeKey]) -> set[TypeKey]:
    """Changed types plus every type whose definition contains one of them."""
    deps = {k: _type_refs(getattr(v, "type", v) if k[0] == "typedef" else v, side.idx, False)
            - {k} for k, v in side.types().items()}
    affected = set(changed)
    grew = True
    while grew:
        grew = False
        for k, d in deps.items():
            if k not in affected and d & affected:
                affected.add(k)
                grew = True
    return affected


def _global_findings(old: _Side, new: _Side, report: Report) -> None:
    # --- type definitions -------------------------------------------------------------------
    """File-scope rules: changed types that code uses, new or changed globals."""
    ot, nt = old.types(), new.types()
    changed = {k for k in ot if k in nt and old.idx.fp(ot[k]) != new.idx.fp(nt[k])}
    for k in sorted(changed):
        users: set[str] = set()
        for side in (old, new):
            affected = _affected_types(side, {k})
            for fname, refs in side.function_type_refs().items():
                if refs & affected:
                    users.add(fname)
        if not users:
            continue
        node = nt[k]
        f, ln = _coord(node)
        target = f"{k[0]} {k[1]}"
        _add_global(report, Finding(
            kind="type-changed", verdict=Verdict.UNSUPPORTED,
            message=_type_message(target, sorted(users)),
            file=f, line=ln, code=new.code(node), target=target,
        ), sorted(users))
    # --- globals ----------------------------------------------------------------------------
    og, ng = old.idx.globals, new.idx.globals
    for name, d in ng.items():
        defines = "extern" not in (d.storage or [])
        prev = og.get(name)
        if prev is None:
            if not defines or _read_only(d, new.idx):
                # a new read-only table or message is data of the patch, like a literal
                continue
            why = (f"new global variable {name}: the running process has no storage for it")
        elif old.idx.fp(prev) == new.idx.fp(d):
            continue
        elif old.idx.fp(prev.type) != new.idx.fp(d.type):
            why = f"type of global {name} changed; live data keeps the old type"
        elif old.idx.fp(prev.init) != new.idx.fp(d.init):
            why = (f"initialiser of global {name} changed; initialisers ran at load time "
                   "and cannot be re-run in a live process")
        elif (prev.storage or []) != (d.storage or []) or (prev.quals or []) != (d.quals or []):
            why = f"storage class or qualifiers of global {name} changed"
        else:
            continue
        f, ln = _coord(d)
        _add_global(report, Finding(
            kind="global-changed", verdict=Verdict.UNSUPPORTED, message=why, file=f, line=ln,
            code=new.code(d), target=name,
        ))


def _last_line(fd: c_ast.FuncDef) -> int | None:
    """Last line of the function's own file that the AST puts inside it."""
    f = fd.decl.coord.file if fd.decl.coord else None
    lines = [n.coord.line for n in walk(fd.body)
             if getattr(n, "coord", None) is not None and n.coord.file == f]
    return max(lines) if lines else None


def _read_only(d: c_ast.Decl, idx: TUIndex) -> bool:
    """Is the object itself const (for arrays: the elements)?"""
    t = d.type
    for _ in range(20):
        if isinstance(t, c_ast.ArrayDecl):
            t = t.type
            continue
        if isinstance(t, c_ast.PtrDecl):
            return "const" in (t.quals or [])
        if isinstance(t, c_ast.TypeDecl):
            if "const" in (t.quals or []) or "const" in (d.quals or []):
                return True
            inner = t.type
            if isinstance(inner, c_ast.IdentifierType) and len(inner.names) == 1 and (
                inner.names[0] in idx.typedefs
            ):
                t = idx.typedefs[inner.names[0]].type
                continue
            return False
        return False
    return False


def _sig_findings(name: str, o: c_ast.FuncDef, n: c_ast.FuncDef, new: _Side) -> list[Finding]:
    """Callers were compiled against the old signature; any change breaks them."""
    out: list[Finding] = []
    f, ln = _coord(n.decl)
    ot, nt = o.decl.type, n.decl.type
    code = new.code(n.decl)
    if fingerprint(ot.type, True) != fingerprint(nt.type, True):
        out.append(Finding("return-type-changed", Verdict.UNSUPPORTED,
                           f"return type of {name} changed; existing callers read the old type",
                           name, f, ln, code))
    oa = fingerprint(ot.args, True) if ot.args is not None else ()
    na = fingerprint(nt.args, True) if nt.args is not None else ()
    if oa != na:
        out.append(Finding("signature-changed", Verdict.UNSUPPORTED,
                           f"parameters of {name} changed; existing callers pass the old ones",
                           name, f, ln, code))
    os_, ns_ = set(o.decl.storage or []), set(n.decl.storage or [])
    if ("static" in os_) != ("static" in ns_):
        out.append(Finding("signature-changed", Verdict.UNSUPPORTED,
                           f"linkage of {name} changed (static added or removed)",
                           name, f, ln, code))
    return out


def _terminal(stmt: c_ast.Node | None, side: _Side) -> bool:
    """Control never falls out of `stmt` (infinite loop without break, or noreturn call)."""
    if stmt is None:
        return False
    if isinstance(stmt, c_ast.Compound):
        items = stmt.block_items or []
        return any(_terminal(s, side) for s in items if not isinstance(s, c_ast.Decl)) and (
            not any(isinstance(s, c_ast.Label) for s in items)
            or _terminal(items[-1], side)
        )
    if isinstance(stmt, c_ast.Label):
        return _terminal(stmt.stmt, side)
    if isinstance(stmt, c_ast.If):
        return _terminal(stmt.iftrue, side) and _terminal(stmt.iffalse, side)
    if isinstance(stmt, c_ast.FuncCall) and isinstance(stmt.name, c_ast.ID):
        return stmt.name.name in libtable.NORETURN or side.noreturn(stmt.name.name)
    if isinstance(stmt, c_ast.For | c_ast.While | c_ast.DoWhile):
        cond = stmt.cond
        from .values import const_eval

        forever = cond is None or const_eval(cond, side.idx) not in (None, 0)
        return forever and not _breaks_out(stmt.stmt)
    return False


def _breaks_out(body: c_ast.Node | None) -> bool:
    """A `break` that leaves this loop (not one inside a nested loop or switch), or a goto."""
    if body is None:
        return False
    stack = [body]
    while stack:
        n = stack.pop()
        if isinstance(n, c_ast.Break | c_ast.Goto):
            return True
        if isinstance(n, c_ast.For | c_ast.While | c_ast.DoWhile | c_ast.Switch):
            # breaks inside belong to the inner statement; gotos still escape
            stack.extend(x for x in walk(n) if isinstance(x, c_ast.Goto))
            continue
        stack.extend(c for _, c in n.children())
    return False


def never_returns(fd: c_ast.FuncDef, side: _Side) -> bool:
    """A function no thread ever leaves can never be swapped out safely."""
    if side.noreturn(fd.decl.name):
        return True
    if any(isinstance(n, c_ast.Return) for n in walk(fd.body)):
        return False
    return _terminal(fd.body, side)


def _stack_findings(name: str, o: c_ast.FuncDef | None, n: c_ast.FuncDef,
                    old: _Side, new: _Side) -> list[Finding]:
    """Functions that are always on some stack never reach quiescence."""
    f, ln = _coord(n.decl)
    code = new.code(n.decl)
    out = []
    if name == "main":
        out.append(Finding("main-function", Verdict.UNSUPPORTED,
                           "main() is on the stack for the life of the process; its old body "
                           "would keep running", name, f, ln, code))
    if name in old.threads or name in new.threads:
        out.append(Finding("thread-start-routine", Verdict.UNSUPPORTED,
                           f"{name} is passed to pthread_create: it is the bottom frame of live "
                           "threads and never becomes quiescent", name, f, ln, code))
    if (o is not None and never_returns(o, old)) or never_returns(n, new):
        out.append(Finding("never-returns", Verdict.UNSUPPORTED,
                           f"{name} never returns (noreturn or an endless loop), so a thread "
                           "is always inside it", name, f, ln, code))
    return out


def _static_local_findings(name: str, o: c_ast.FuncDef, n: c_ast.FuncDef,
                           old: _Side, new: _Side) -> list[Finding]:
    """Local statics live in the target; new ones have no storage there."""
    os_ = Scope(old.idx, o).local_statics
    out = []
    for sname, d in Scope(new.idx, n).local_statics.items():
        prev = os_.get(sname)
        if _read_only(d, new.idx) and (prev is None or _read_only(prev, old.idx)):
            # a const table only this function sees: the patch carries its own copy
            continue
        if prev is None:
            why = f"new function-local static {sname}: the running process has no storage for it"
        elif old.idx.fp(prev.type) != new.idx.fp(d.type) or old.idx.fp(prev.init) != new.idx.fp(
                d.init):
            why = f"type or initialiser of local static {sname} changed; it was set at load time"
        else:
            continue
        f, ln = _coord(d)
        out.append(Finding("static-local-changed", Verdict.UNSUPPORTED, why, name, f, ln,
                           new.code(d), target=f"{name}::{sname}"))
    return out


def _write_findings(name: str, old_effects: list[Effect], new_effects: list[Effect],
                    new: _Side) -> list[Finding]:
    """Non-local writes of the new body that the old body did not make (or stored differently)."""
    old_locs = {e.loc for e in old_effects}
    old_values: dict[Loc, set[str]] = {}
    for e in old_effects:
        old_values.setdefault(e.loc, set()).add(e.value)
    out: list[Finding] = []
    seen: set[Loc] = set()
    seen_changed: set[tuple[Loc, str]] = set()
    for e in sorted(new_effects, key=lambda e: (_coord(e.node)[1] or 0)):
        if e.loc in seen:
            continue
        target = render(e.loc)
        f, ln = _coord(e.node)
        if covered(e.loc, old_locs):
            # same place as before: is the same thing stored there?
            before = _values_covering(e.loc, old_values)
            if e.loc[0] == "call" or "*" in before or e.value in before or (
                    e.loc, e.value) in seen_changed:
                continue
            seen_changed.add((e.loc, e.value))
            shown = ", ".join(sorted(v for v in before if v)[:3]) or "?"
            how = f" via {e.detail}" if e.detail else ""
            out.append(Finding(
                "changed-write", Verdict.REVIEW,
                f"stores something new into {target}{how}: `{e.value}` where the old version "
                f"stored `{shown}`; the location was written before, the value is new",
                name, f, ln, new.code(e.node), via=e.via, target=target))
            continue
        seen.add(e.loc)
        kind = _WRITE_KIND[e.loc[0]]
        if kind == "unknown-call":
            msg = (f"new call: {e.detail or target}; "
                   "the old version never made it, so its effects were not part of the old "
                   "behaviour")
        else:
            what = {
                "write-global": f"global {target}",
                "write-static": f"static {target}",
                "write-param": f"{target}, memory the caller passed in (out-parameter)",
                "write-heap": f"heap memory {target}",
                "write-pointer": f"{target}, memory behind a pointer of unknown origin",
            }[kind]
            how = ""
            if e.via.startswith("alias:"):
                how = f" through local pointer {e.via[6:]}"
            elif e.via.startswith("call:") or e.via.startswith("library:"):
                how = f" via {e.detail}"
            msg = (f"writes {what}{how}; the old version never wrote it, so state other code "
                   "reads changes")
        out.append(Finding(kind, Verdict.REVIEW, msg, name, f, ln, new.code(e.node),
                           via=e.via, target=target))
    return _merge_same_line(out)


def _merge_same_line(findings: list[Finding]) -> list[Finding]:
    """One finding per (line, kind): a store through a pointer that may point to several
    places (q = a or b; a list walked with p = p->next) names them all once."""
    out: list[Finding] = []
    index: dict[tuple, Finding] = {}
    extra: dict[int, list[str]] = {}
    for fd in findings:
        key = (fd.file, fd.line, fd.kind, fd.via)
        first = index.get(key)
        if first is None:
            index[key] = fd
            out.append(fd)
            continue
        extra.setdefault(id(first), []).append(fd.target or "?")
    for fd in out:
        more = extra.get(id(fd))
        if more:
            names = [fd.target or "?", *more]
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4
                                            else "")
            fd.message = f"{fd.message} (this store may reach any of: {shown})"
    return out


def _values_covering(loc: Loc, old_values: dict[Loc, set[str]]) -> set[str]:
    """Values the old version stored at `loc`; an enclosing object's write stores "*"."""
    got = set(old_values.get(loc, set()))
    kind, name, path = loc
    for i in range(len(path)):
        if "[]" not in path[i:] and (kind, name, path[:i]) in old_values:
            got.add("<whole object>")
    return got


def _return_findings(name: str, o: c_ast.FuncDef, n: c_ast.FuncDef,
                     old: _Side, new: _Side) -> list[Finding]:
    """Values the new body can return that the old body could not."""
    def points_to(side: _Side, fd: c_ast.FuncDef):
        fe = FunctionEffects(side.idx, fd, side.summaries)
        return lambda e: {f"{loc[0]}:{render(loc)}" for loc in fe.val(e)}

    old_keys = {v.key for v in return_values(Scope(old.idx, o), points_to(old, o))}
    out = []
    seen = set()
    for v in return_values(Scope(new.idx, n), points_to(new, n)):
        if v.key in old_keys or v.key in seen:
            continue
        seen.add(v.key)
        f, ln = _coord(v.node)
        out.append(Finding("new-return-value", Verdict.REVIEW,
                           f"returns {v.shown}, which the old version never returned; callers "
                           "may not handle it", name, f, ln, new.code(v.node), target=v.shown))
    return out


def _analyze_pair(ou: Unit, nu: Unit, report: Report, threads: set[str] | None = None,
                  externals: tuple[External | None, External | None] = (None, None)) -> None:
    """All rules for one old/new TU pair, appended to `report`."""
    old, new = _Side(ou), _Side(nu)
    if threads:
        new.threads |= threads
    _global_findings(old, new, report)

    changed: list[str] = []
    macro: list[str] = []
    for name, nfd in new.idx.functions.items():
        ofd = old.idx.functions.get(name)
        if ofd is None:
            continue
        if old.idx.function_fp(ofd) == new.idx.function_fp(nfd):
            continue
        ot = old.idx.sources.function_text(*_coord(ofd.decl), _last_line(ofd), name)
        nt = new.idx.sources.function_text(*_coord(nfd.decl), _last_line(nfd), name)
        if ot is not None and ot == nt:
            macro.append(name)
        else:
            changed.append(name)

    old.summaries = summarize(old.idx, changed, externals[0])
    added = [n for n in new.idx.functions if n not in old.idx.functions]
    new.summaries = summarize(new.idx, changed + added, externals[1])

    for name in changed + macro:
        ofd, nfd = old.idx.functions[name], new.idx.functions[name]
        f, ln = _coord(nfd.decl)
        findings: list[Finding] = []
        if name in macro:
            findings.append(Finding(
                "macro-changed", Verdict.UNSUPPORTED,
                f"the text of {name} is unchanged but it compiles differently (a macro or "
                "conditional it uses changed); the patch would have to replace a function "
                "nobody edited", name, f, ln, new.code(nfd.decl)))
        findings += _sig_findings(name, ofd, nfd, new)
        if old.idx.is_inline(name) or new.idx.is_inline(name):
            findings.append(Finding(
                "inline-changed", Verdict.UNSUPPORTED,
                f"{name} is inline: callers carry their own copies, which a body swap does not "
                "reach", name, f, ln, new.code(nfd.decl)))
        findings += _stack_findings(name, ofd, nfd, old, new)
        findings += _static_local_findings(name, ofd, nfd, old, new)
        o_eff = old.summaries.get(name) or FunctionEffects(old.idx, ofd, old.summaries).effects
        n_eff = FunctionEffects(new.idx, nfd, new.summaries).effects
        findings += _write_findings(name, o_eff, n_eff, new)
        findings += _return_findings(name, ofd, nfd, old, new)
        verdict = Verdict.worst([x.verdict for x in findings])
        # what blocks the patch first, then in source order
        findings.sort(key=lambda x: (-x.verdict.rank, x.line or 0))
        status = "preprocessed-only" if name in macro else "changed"
        report.functions.append(FunctionResult(name, status, verdict, f, ln, findings))

    for name, nfd in new.idx.functions.items():
        if name not in old.idx.functions:
            f, ln = _coord(nfd.decl)
            findings = _stack_findings(name, None, nfd, old, new) if name == "main" else []
            report.functions.append(FunctionResult(
                name, "added", Verdict.worst([x.verdict for x in findings]), f, ln, findings))
    for name, ofd in old.idx.functions.items():
        if name not in new.idx.functions:
            f, ln = _coord(ofd.decl)
            report.functions.append(FunctionResult(name, "removed", Verdict.SAFE, f, ln))

