"""Generate the patch translation unit from the NEW source text.

Unchanged function definitions become prototypes; each changed, added (or copied) function is
wrapped in ``#define name (*__opus_ref_name)`` ... ``#undef name`` for every reference to state
or code the target defines, with ``static __typeof__(name) *__opus_ref_name`` slots that the
runtime fills with target addresses. Line numbers of the source are preserved with ``#line`` so
debug info and ``__LINE__`` match the new source.
"""

from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass, field

from pycparser import c_ast, c_generator

from ..cfront import ChangeSet, FunctionDef, LocalStatic, TranslationUnit
from ..cfront.spans import FunctionSpan, Token, function_spans, tokenize
from .elfinfo import SymbolIndex, dwarf_local_static_address
from .errors import BuildError

SLOT_PREFIX = "__opus_ref_"
KEEP_ARRAY = "__opus_keep"


@dataclass
class Slot:
    """One pointer slot in the patch object and the target symbol it must point to."""

    slot: str
    c_name: str  # identifier the #define rewrites
    symbol: str  # C name of the target symbol
    kind: str  # "object" | "function"
    binding: str  # "global" | "static" | "local-static"
    function: str | None = None
    target_symbol: str = ""  # exact .symtab name found at build time (calls.0 for a local)
    decl: str = ""  # C declaration of the slot


@dataclass
class GeneratedTU:
    text: str
    replaced: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Lines:
    def __init__(self, text: str) -> None:
        self.nl = [i for i, c in enumerate(text) if c == "\n"]

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.nl, offset) + 1


def _uniq(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name = f"{base}__{n}"
        n += 1
    taken.add(name)
    return name


def _local_slot_decl(ls: LocalStatic, slot: str, local_names: set[str]) -> str:
    """``static T (*slot)`` for a block-scope static, typed from its declaration (which is
    written at file scope, so the type must not use names local to the function)."""
    t = copy.deepcopy(ls.node.type)
    for n in _type_nodes(t):
        if isinstance(n, c_ast.IdentifierType) and set(n.names) & local_names:
            raise BuildError(f"local static {ls.name} (line {ls.line}) has a type named by a "
                             f"typedef local to the function; move the typedef to file scope")
    if isinstance(t, c_ast.ArrayDecl) and t.dim is None and ls.node.init is not None:
        init = ls.node.init
        if isinstance(init, c_ast.InitList) and not any(
                isinstance(e, c_ast.NamedInitializer) for e in init.exprs):
            t.dim = c_ast.Constant("int", str(len(init.exprs)))
        elif isinstance(init, c_ast.Constant) and init.type == "string":
            t.dim = c_ast.Constant("int", f"sizeof({init.value})")
    inner = t
    while not isinstance(inner, c_ast.TypeDecl):
        inner = inner.type
    inner.declname = slot
    for n in _type_nodes(t):
        if isinstance(n, (c_ast.Struct, c_ast.Union, c_ast.Enum)) and (
                getattr(n, "decls", None) is not None or getattr(n, "values", None) is not None):
            raise BuildError(f"local static {ls.name} (line {ls.line}) has a type defined inside "
                             f"the function; move the struct/union/enum definition to file "
                             f"scope so the patch can name it")
    decl = c_ast.Decl(slot, [], [], ["static"], [], c_ast.PtrDecl([], t), None, None)
    return c_generator.CGenerator().visit(decl) + " __attribute__((used));"


def _type_nodes(t: c_ast.Node | None):
    while t is not None:
        yield t
        t = getattr(t, "type", None)


def _static_statements(toks: list[Token], lo: int, hi: int) -> list[tuple[int, int, set[str]]]:
    """(start token, end token inclusive, identifiers) of block-scope declarations containing
    ``static`` within token index range [lo, hi)."""
    out: list[tuple[int, int, set[str]]] = []
    seen: set[int] = set()
    for k in range(lo, hi):
        if toks[k].text != "static":
            continue
        s = k
        while s > lo and toks[s - 1].text not in ("{", "}", ";"):
            s -= 1
        if s in seen:
            continue
        seen.add(s)
        depth = 0
        e = k
        while e < hi:
            tx = toks[e].text
            if tx in "([{":
                depth += 1
            elif tx in ")]}":
                depth -= 1
            elif tx == ";" and depth == 0:
                break
            e += 1
        out.append((s, e, {toks[j].text for j in range(s, e) if toks[j].kind == "id"}))
    return out


def _blank(text: str) -> str:
    """Same length in lines, no content: keeps line numbers of what follows."""
    return "\n" * text.count("\n")


class _Generator:
    def __init__(self, text: str, new_tu: TranslationUnit, old_tu: TranslationUnit,
                 changes: ChangeSet, symbols: SymbolIndex, file_base: str, binary: str,
                 taken: set[str], copy: list[str]) -> None:
        self.text = text
        self.copy = copy
        self.new = new_tu
        self.old = old_tu
        self.changes = changes
        self.syms = symbols
        self.file = file_base
        self.binary = binary
        self.taken = taken
        self.out = GeneratedTU(text="")
        self.tu_slots: dict[tuple[str, str, str | None], Slot] = {}
        self.token_rewrites: dict[str, set[str]] = {}  # function -> names rewritten as tokens

    # ---- deciding what goes through a slot ------------------------------------------------
    def _check_function(self, fd: FunctionDef) -> None:
        if fd.name == "main":
            raise BuildError("main is changed: a running process never re-enters main, so the "
                             "fix would never run; move the changed code into a function main "
                             "calls")
        if fd.is_inline:
            raise BuildError(f"{fd.name} ({self.file}:{fd.line}) is inline: its callers in the "
                             f"target carry their own copies, which a patch cannot reach; "
                             f"patch its callers instead (or drop `inline` and rebuild the "
                             f"program)")
        if fd.is_static:
            found = [s for s in self.syms.local_sym(self.file, fd.name) if s.type == "STT_FUNC"]
        else:
            g = self.syms.global_sym(fd.name)
            # pyelftools names an IFUNC (type 10) STT_LOOS
            ifunc_or_func = ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS")
            found = [g] if g is not None and g.type in ifunc_or_func else []
        self._unique(fd.name, found)
        if not found:
            group = (self.syms.locals_by_file.get(self.file, {}) if fd.is_static
                     else self.syms.globals)
            clones = sorted(n for n in group if n.startswith(fd.name + "."))
            how = (f"only compiler clones with another calling convention exist "
                   f"({', '.join(clones)})" if clones else "inlined by the compiler")
            raise BuildError(f"function {fd.name} has no symbol in {self.binary}: {how}; patch "
                             f"its callers instead, or rebuild the program with "
                             f"__attribute__((noinline, noclone)) on {fd.name}")

    def _unique(self, name: str, cands: list) -> None:
        if len({c.value for c in cands}) > 1:
            raise BuildError(f"{self.binary} has {len(cands)} static symbols named {name} in "
                             f"files named {self.file} (two source files with the same "
                             f"basename?); opus-bpf cannot tell them apart")

    def _existed_before(self, name: str) -> bool:
        return name in self.old.file_scope

    def _resolve(self, name: str, user: FunctionDef, patch_side: set[str],
                 queue: list[str]) -> Slot | None:
        """Slot for a free *name* used in *user*, or None to leave the reference direct."""
        if name in patch_side:
            return None
        fs = self.new.file_scope.get(name)
        if fs is None:
            return None  # builtins, undeclared names
        if fs.is_tls:
            raise BuildError(f"{user.name} uses thread-local {name}: a patch cannot reach "
                             f"another object's TLS; keep TLS access out of the changed code")
        if fs.static:
            cands = [s for s in self.syms.local_sym(self.file, name)
                     if s.type in ("STT_OBJECT", "STT_FUNC")]
            if cands:
                self._unique(name, cands)
                return self._tu_slot(name, fs.kind, "static", None, cands[0].name,
                                     f"__typeof__({name})")
            if fs.kind == "function":
                if name in self.new.functions:
                    patch_side.add(name)
                    queue.append(name)
                    self.out.copied.append(name)
                return None  # a header's static inline: compiled into the patch
            if fs.defined_in_file and self._existed_before(name):
                self.out.warnings.append(
                    f"static {name} ({self.file}) has no symbol in the target (optimized out: "
                    f"never written, or constant); {user.name} uses the patch's own copy, "
                    f"initialized as in the source")
            return None
        g = self.syms.global_sym(name)
        if g is not None:
            if g.type == "STT_TLS":
                raise BuildError(f"{user.name} uses thread-local {name}; not supported")
            return self._tu_slot(name, fs.kind, "global", None, g.name, f"__typeof__({name})")
        if fs.kind == "function" and name in self.new.functions:
            patch_side.add(name)
            queue.append(name)
            self.out.copied.append(name)
        return None  # defined by a shared library, or new state the patch introduces

    def _tu_slot(self, name: str, kind: str, binding: str, function: str | None,
                 target_symbol: str, typeof: str) -> Slot:
        key = (binding, name, function)
        slot = self.tu_slots.get(key)
        if slot is None:
            sname = _uniq(SLOT_PREFIX + name, self.taken)
            slot = Slot(sname, name, name, kind, binding, function, target_symbol,
                        f"static {typeof} *{sname} __attribute__((used));")
            self.tu_slots[key] = slot
            self.out.slots.append(slot)
        return slot

    def _local_slots(self, fd: FunctionDef) -> list[tuple[LocalStatic, Slot | None]]:
        """Each local static of a changed/copied function: its slot, or None to keep it in
        the patch (new state the diff adds, or a constant the target folded away)."""
        old_fd = self.old.functions.get(fd.name)
        old_names = {ls.name for ls in old_fd.local_statics} if old_fd else set()
        counts: dict[str, int] = {}
        for ls in fd.local_statics:
            counts[ls.name] = counts.get(ls.name, 0) + 1
        res: list[tuple[LocalStatic, Slot | None]] = []
        for ls in fd.local_statics:
            if fd.name in self.changes.added or ls.name not in old_names:
                res.append((ls, None))  # the patch's own new state
                continue
            if counts[ls.name] > 1:
                raise BuildError(f"{fd.name} declares two local statics named {ls.name}; "
                                 f"rename one so each maps to one target object")
            cands = self.syms.local_statics(self.file, ls.name)
            decls = sum(1 for f in self.old.functions.values() for x in f.local_statics
                        if x.name == ls.name)
            if len(cands) == 1 and decls == 1:
                target_symbol = cands[0].name
            elif cands:
                target_symbol = self._which_local(fd.name, ls.name, cands, ls.is_const)
            else:
                target_symbol = ""
            if not cands or (target_symbol == "" and ls.is_const):
                if not ls.is_const:
                    raise BuildError(f"local static {fd.name}.{ls.name} ({self.file}:{ls.line})"
                                     f" has no symbol in {self.binary} (optimized out?); the "
                                     f"patch cannot reach its state")
                res.append((ls, None))  # a constant: the patch's copy is just as good
                continue
            assert old_fd is not None
            before = next(x for x in old_fd.local_statics if x.name == ls.name)
            gen = c_generator.CGenerator()
            if gen.visit(before.node) != gen.visit(ls.node):
                self.out.warnings.append(
                    f"the declaration of {fd.name}'s static {ls.name} changed ({self.file}:"
                    f"{ls.line}); the patch uses the running program's variable, which keeps "
                    f"its current value and type")
            sname = _uniq(f"{SLOT_PREFIX}{fd.name}__{ls.name}", self.taken)
            slot = Slot(sname, ls.name, ls.name, "object", "local-static", fd.name,
                        target_symbol, _local_slot_decl(ls, sname, fd.names.bound))
            self.out.slots.append(slot)
            res.append((ls, slot))
        return res

    def _which_local(self, function: str, name: str, cands: list, is_const: bool) -> str:
        """Several ``name.N`` or several declarations in the file: ask DWARF which symbol
        *function*'s static is. "" when it cannot say (a warning unless it is a constant,
        which the patch then simply copies)."""
        addr = dwarf_local_static_address(self.syms.source, self.file, function, name)
        hit = [c.name for c in cands if addr is not None and c.value == addr]
        if hit:
            return hit[0]
        if not is_const:
            self.out.warnings.append(
                f"{self.file} has {len(cands)} local static(s) named {name} and no usable "
                f"debug info says which one {function} declares; the runtime must decide "
                f"(build the program with -g)")
        return ""

    # ---- text -----------------------------------------------------------------------------
    def run(self) -> GeneratedTU:
        new_fns = self.new.functions
        patch_side: set[str] = set(self.changes.modified) | set(self.changes.added)
        for name in self.changes.modified:
            self._check_function(new_fns[name])
        self.out.replaced = list(self.changes.modified)
        self.out.added = list(self.changes.added)
        patch_side |= set(self.copy)
        self.out.copied += [c for c in self.copy if c not in self.out.copied]

        queue = sorted(patch_side)
        per_fn_globals: dict[str, dict[str, Slot]] = {}
        per_fn_locals: dict[str, list[tuple[LocalStatic, Slot | None]]] = {}
        while queue:
            name = queue.pop(0)
            fd = new_fns[name]
            names = fd.names
            slots: dict[str, Slot] = {}
            for ref in sorted(names.free):
                s = self._resolve(ref, fd, patch_side, queue)
                if s is not None:
                    slots[ref] = s
            locals_ = self._local_slots(fd) if name not in self.changes.added else [
                (ls, None) for ls in fd.local_statics]
            self._check_shadowing(fd, slots, locals_)
            per_fn_globals[name] = slots
            per_fn_locals[name] = locals_

        spans = function_spans(self.text, set(new_fns))
        by_name: dict[str, list[FunctionSpan]] = {}
        for sp in spans:
            by_name.setdefault(sp.name, []).append(sp)
        lines = _Lines(self.text)
        for name in patch_side:
            got = by_name.get(name, [])
            if len(got) > 1:
                # "#if A / def / #else / def / #endif": the AST's line says which one is live
                line = new_fns[name].line
                live = [sp for sp in got
                        if lines.line(sp.start) <= line <= lines.line(sp.body_open)]
                if len(live) == 1:
                    spans = [sp for sp in spans if sp.name != name or sp is live[0]]
                    got = live
            if len(got) != 1:
                why = ("is defined more than once in the text (#if branches?)" if got else
                       "cannot be found in the source text (defined through a macro?)")
                raise BuildError(f"function {name} {why}; opus-bpf needs exactly one plain "
                                 f"definition of each changed function")
        for name in sorted(set(new_fns) - patch_side - set(by_name)):
            self.out.warnings.append(f"definition of unchanged {name} not found in the text "
                                     f"(macro-generated?); kept as is in the patch TU")

        toks = tokenize(self.text)
        starts = [t.start for t in toks]
        pieces: list[str] = []
        pos = 0
        declared: set[str] = set()
        for sp in sorted(spans, key=lambda s: s.start):
            pieces.append(self.text[pos:sp.start])
            if sp.name not in patch_side:
                pieces.append(self.text[sp.start:sp.body_open] + ";"
                              + _blank(self.text[sp.body_open:sp.end]))
                pos = sp.end
                continue
            gslots = per_fn_globals[sp.name]
            lslots = [(ls, s) for ls, s in per_fn_locals[sp.name] if s is not None]
            pre: list[str] = []
            for s in list(gslots.values()) + [s for _, s in lslots]:
                if s.slot not in declared:
                    declared.add(s.slot)
                    pre.append(s.decl)
            rewrite = self.token_rewrites.get(sp.name, set())
            defs = {s.c_name: s.slot for s in gslots.values() if s.c_name not in rewrite}
            defs.update({ls.name: s.slot for ls, s in lslots})
            pre += [f"#define {c} (*{slot})" for c, slot in sorted(defs.items())]
            body = self.text[sp.start:sp.end]
            lo = bisect.bisect_left(starts, sp.start)
            hi = bisect.bisect_left(starts, sp.end)
            body_lo = bisect.bisect_left(starts, sp.body_open)
            removed = (self._remove_local_statics(sp, body, toks, body_lo, hi, lines, lslots)
                       if lslots else [])
            edits = list(removed)
            if rewrite:
                edits += [e for e in self._token_edits(sp, toks, lo, hi,
                                                       {n: gslots[n].slot for n in rewrite})
                          if not any(a <= e[0] < b for a, b, _ in removed)]
            for a, b, rep in sorted(edits, reverse=True):
                body = body[:a] + rep + body[b:]
            if pre:
                pieces.append(f"\n/* opus-bpf: slots for {sp.name} */\n" + "\n".join(pre)
                              + f"\n#line {lines.line(sp.start)}\n")
            pieces.append(body)
            if defs:
                pieces.append("\n" + "\n".join(f"#undef {c}" for c in sorted(defs))
                              + f"\n#line {lines.line(sp.end)}\n")
            pos = sp.end
        pieces.append(self.text[pos:])
        keep = sorted(patch_side) + sorted(s.slot for s in self.out.slots)
        pieces.append("\n/* opus-bpf: roots for --gc-sections */\n"
                      f"__attribute__((used, visibility(\"default\"))) void *const "
                      f"{_uniq(KEEP_ARRAY, self.taken)}[] = {{\n"
                      + "".join(f"  (void *)&{n},\n" for n in keep) + "};\n")
        self.out.text = "".join(pieces)
        return self.out

    def _check_shadowing(self, fd: FunctionDef, slots: dict[str, Slot],
                         locals_: list[tuple[LocalStatic, Slot | None]]) -> None:
        names = fd.names
        for ref, s in slots.items():
            what = ("function" if s.kind == "function" else "variable")
            if ref in names.bound:
                raise BuildError(
                    f"in {fd.name} ({self.file}:{fd.line}) the name {ref} is both the target's "
                    f"{s.binding} {what} (reached through a pointer slot) and a local variable "
                    f"or parameter; rename the local in the patch")
            if ref in names.members:
                # a #define would rewrite the member too: rewrite the identifier's tokens in the
                # text instead, if all its uses are visible there (checked in _token_edits)
                self.token_rewrites.setdefault(fd.name, set()).add(ref)
        slotted = {ls.name for ls, s in locals_ if s is not None}
        bound_counts = _decl_counts(fd.node)
        for name in slotted:
            if bound_counts.get(name, 0) > 1 or name in names.members:
                raise BuildError(
                    f"in {fd.name} ({self.file}:{fd.line}) local static {name} is shadowed by "
                    f"another local, parameter or struct member of the same name; rename it "
                    f"in the patch")

    def _token_edits(self, sp: FunctionSpan, toks: list[Token], lo: int, hi: int,
                     names: dict[str, str]) -> list[tuple[int, int, str]]:
        """Replace each free use of *names* by ``(*slot)`` token by token, leaving members
        (``.x``, ``->x``) alone. Only when the text shows exactly the uses the AST has: a use
        hidden in a macro expansion cannot be rewritten, so that is refused."""
        fd = self.new.functions[sp.name]
        edits: list[tuple[int, int, str]] = []
        for name, slot in names.items():
            hits = []
            for k in range(lo, hi):
                t = toks[k]
                if t.kind != "id" or t.text != name:
                    continue
                prev = toks[k - 1] if k > lo else None
                if prev is not None and (prev.text == "." or (
                        prev.text == ">" and k - 2 >= lo and toks[k - 2].text == "-"
                        and toks[k - 2].end == prev.start)):
                    continue
                hits.append(t)
            if len(hits) != fd.names.free_counts.get(name, 0):
                raise BuildError(
                    f"in {fd.name} ({self.file}:{fd.line}) the name {name} is both the target's "
                    f"variable reached through a pointer slot and a struct member used there, "
                    f"and some uses come from macro expansions; rename one of them in the patch")
            edits += [(t.start - sp.start, t.end - sp.start, f"(*{slot})") for t in hits]
        return edits

    def _remove_local_statics(self, sp: FunctionSpan, body: str, toks: list[Token], lo: int,
                              hi: int, lines: _Lines,
                              lslots: list[tuple[LocalStatic, Slot | None]]
                              ) -> list[tuple[int, int, str]]:
        """Edits (offsets relative to the span) blanking the declarations of local statics
        that became slots."""
        base = sp.start
        want = {ls.name: ls for ls, _ in lslots}
        found: set[str] = set()
        edits: list[tuple[int, int]] = []
        for s, e, ids in _static_statements(toks, lo, hi):
            l0, l1 = lines.line(toks[s].start), lines.line(toks[e].start)
            mine = {n for n in ids if n in want and l0 <= want[n].line <= l1}
            if not mine:
                continue
            others = {ls.name for ls in self.new.functions[sp.name].local_statics
                      if ls.name in ids and l0 <= ls.line <= l1} - mine
            if others:
                raise BuildError(f"in {sp.name}, the declaration on line {l0} mixes local "
                                 f"statics the patch binds to the target ({', '.join(mine)}) "
                                 f"and new ones ({', '.join(others)}); split it")
            if ids & {"typeof", "__typeof__", "__typeof", "__auto_type"}:
                raise BuildError(f"in {sp.name}, local static {sorted(mine)[0]} (line {l0}) is "
                                 f"declared with typeof/__auto_type; spell its type out so the "
                                 f"patch can declare a pointer to it")
            found |= mine
            edits.append((toks[s].start - base, toks[e].end - base))
        missing = set(want) - found
        if missing:
            raise BuildError(f"cannot find the declaration of local static "
                             f"{sp.name}.{sorted(missing)[0]} in the source text (declared "
                             f"through a macro?); write it as a plain declaration")
        return [(a, b, _blank(body[a:b])) for a, b in edits]


def _decl_counts(node: c_ast.FuncDef) -> dict[str, int]:
    counts: dict[str, int] = {}

    class V(c_ast.NodeVisitor):
        def visit_Decl(self, n: c_ast.Decl) -> None:  # noqa: N802
            if n.name:
                counts[n.name] = counts.get(n.name, 0) + 1
            self.generic_visit(n)

        def visit_Struct(self, n: c_ast.Struct) -> None:  # noqa: N802
            return  # members are not variables

        visit_Union = visit_Struct  # noqa: N815

    V().visit(node.body)
    ftype = node.decl.type
    while not isinstance(ftype, c_ast.FuncDecl) and hasattr(ftype, "type"):
        ftype = ftype.type
    if isinstance(ftype, c_ast.FuncDecl) and ftype.args is not None:
        for p in ftype.args.params:
            if isinstance(p, c_ast.Decl) and p.name:
                counts[p.name] = counts.get(p.name, 0) + 1
    return counts


def generate_patch_tu(text: str, new_tu: TranslationUnit, old_tu: TranslationUnit,
                      changes: ChangeSet, symbols: SymbolIndex, file_base: str, binary: str,
                      taken: set[str] | None = None, copy: list[str] | None = None
                      ) -> GeneratedTU:
    """Patch TU text for one changed source file; *taken* makes slot names bundle-unique.
    *copy*: changed functions with no out-of-line symbol (inlined everywhere), compiled into
    the patch for the replaced functions that contain them (``reach``)."""
    return _Generator(text, new_tu, old_tu, changes, symbols, file_base, binary,
                      taken if taken is not None else set(), copy or []).run()
