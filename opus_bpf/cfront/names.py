"""Which identifiers a function body uses, and which it binds itself.

The build needs the *free* names of a function (references to file-scope state or functions)
to decide which get pointer slots, and the names the function binds locally or uses as struct
members, because a ``#define name (*slot)`` would rewrite those too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycparser import c_ast


@dataclass
class FunctionNames:
    """Names seen in one function definition."""

    free: set[str] = field(default_factory=set)  # referenced, not bound in the function
    bound: set[str] = field(default_factory=set)  # parameters, locals, local typedefs/enums
    members: set[str] = field(default_factory=set)  # s.x, p->x, .x = , offsetof(T, x)
    called: set[str] = field(default_factory=set)  # free names used as f(...)
    # how many ID nodes reference each free name (after macro expansion): the build compares
    # it with the identifier's occurrences in the source text
    free_counts: dict[str, int] = field(default_factory=dict)


def _param_names(funcdef: c_ast.FuncDef) -> set[str]:
    names: set[str] = set()
    ftype = funcdef.decl.type
    while not isinstance(ftype, c_ast.FuncDecl) and hasattr(ftype, "type"):
        ftype = ftype.type
    if isinstance(ftype, c_ast.FuncDecl) and ftype.args is not None:
        for p in ftype.args.params:
            if isinstance(p, c_ast.Decl) and p.name:
                names.add(p.name)
    for p in funcdef.param_decls or []:  # K&R
        if p.name:
            names.add(p.name)
    return names


def function_names(funcdef: c_ast.FuncDef) -> FunctionNames:
    """Walk *funcdef* with C block scoping and collect free/bound/member names."""
    out = FunctionNames()
    params = _param_names(funcdef)
    out.bound |= params
    _Walker(out).walk(funcdef.body, [set(params)])
    return out


class _Walker:
    def __init__(self, out: FunctionNames) -> None:
        self.out = out

    def _free(self, name: str, scopes: list[set[str]]) -> bool:
        return not any(name in s for s in scopes)

    def walk(self, node: c_ast.Node | None, scopes: list[set[str]]) -> None:  # noqa: C901
        if node is None:
            return
        out = self.out
        if isinstance(node, c_ast.ID):
            if self._free(node.name, scopes):
                out.free.add(node.name)
                out.free_counts[node.name] = out.free_counts.get(node.name, 0) + 1
            return
        if isinstance(node, c_ast.StructRef):
            self.walk(node.name, scopes)
            if isinstance(node.field, c_ast.ID):
                out.members.add(node.field.name)
            return
        if isinstance(node, c_ast.NamedInitializer):
            for n in node.name:
                if isinstance(n, c_ast.ID):
                    out.members.add(n.name)
                else:
                    self.walk(n, scopes)
            self.walk(node.expr, scopes)
            return
        if isinstance(node, c_ast.FuncCall):
            if isinstance(node.name, c_ast.ID) and node.name.name == "offsetof":
                args = node.args.exprs if node.args else []
                for a in args[1:]:
                    self._members_of_designator(a)
                return
            if isinstance(node.name, c_ast.ID) and self._free(node.name.name, scopes):
                out.called.add(node.name.name)
            self.walk(node.name, scopes)
            self.walk(node.args, scopes)
            return
        if isinstance(node, c_ast.Compound):
            scopes.append(set())
            for item in node.block_items or []:
                self.walk(item, scopes)
            scopes.pop()
            return
        if isinstance(node, c_ast.For):
            scopes.append(set())
            for child in (node.init, node.cond, node.next, node.stmt):
                self.walk(child, scopes)
            scopes.pop()
            return
        if isinstance(node, c_ast.Decl):
            self.walk_type(node.type, scopes)
            if node.name and ("extern" in node.storage or isinstance(node.type, c_ast.FuncDecl)):
                # a block-scope extern declaration names the file-scope entity: it is a use of
                # that name (free, even under a parameter of the same name: parameters have no
                # linkage) and, for the rest of the block, a local declaration of it
                out.free.add(node.name)
            if node.name:
                scopes[-1].add(node.name)
                out.bound.add(node.name)
            self.walk(node.init, scopes)
            self.walk(node.bitsize, scopes)
            return
        if isinstance(node, c_ast.DeclList):
            for d in node.decls:
                self.walk(d, scopes)
            return
        if isinstance(node, c_ast.Typedef):
            self.walk_type(node.type, scopes)
            scopes[-1].add(node.name)
            out.bound.add(node.name)
            return
        if isinstance(node, c_ast.Typename):
            self.walk_type(node.type, scopes)
            return
        if isinstance(node, (c_ast.Struct, c_ast.Union, c_ast.Enum)):
            self.walk_type(node, scopes)
            return
        for _, child in node.children():
            self.walk(child, scopes)

    def _members_of_designator(self, node: c_ast.Node) -> None:
        if isinstance(node, c_ast.ID):
            self.out.members.add(node.name)
        elif isinstance(node, c_ast.StructRef):
            self._members_of_designator(node.name)
            if isinstance(node.field, c_ast.ID):
                self.out.members.add(node.field.name)
        elif isinstance(node, c_ast.ArrayRef):
            self._members_of_designator(node.name)

    def walk_type(self, t: c_ast.Node | None, scopes: list[set[str]]) -> None:
        """Types bind enumerators and can hold expressions (array sizes); members bind nothing."""
        if t is None:
            return
        if isinstance(t, c_ast.Enum):
            if t.values is not None:
                for e in t.values.enumerators:
                    self.walk(e.value, scopes)
                    scopes[-1].add(e.name)
                    self.out.bound.add(e.name)
            return
        if isinstance(t, (c_ast.Struct, c_ast.Union)):
            for d in t.decls or []:
                if isinstance(d, c_ast.Decl):
                    self.out.members.add(d.name) if d.name else None
                    self.walk_type(d.type, scopes)
                    self.walk(d.bitsize, scopes)
            return
        if isinstance(t, c_ast.ArrayDecl):
            self.walk(t.dim, scopes)
            self.walk_type(t.type, scopes)
            return
        if isinstance(t, (c_ast.PtrDecl, c_ast.TypeDecl)):
            self.walk_type(t.type, scopes)
            return
        if isinstance(t, c_ast.FuncDecl):
            # a prototype inside a body: its parameter names bind nothing outside it
            self.walk_type(t.type, scopes)
            return
        if isinstance(t, c_ast.IdentifierType):
            return
        for _, child in t.children():
            self.walk(child, scopes)
