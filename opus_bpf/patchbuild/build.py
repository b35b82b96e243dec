"""build_bundle: diff + sources + target binary -> a verified .opus bundle."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pycparser import c_ast, c_generator

from ..bundle import (
    AddedFunction,
    Binding,
    BuildInfo,
    BundleError,
    Manifest,
    PatchObject,
    ReplacedFunction,
    Target,
    write_bundle,
)
from ..cfront import (
    CFrontError,
    ChangeSet,
    TranslationUnit,
    changed_functions,
    parse,
    preprocess,
)
from .compdb import CompileCommand, find_command, load_compdb, parse_cflags
from .diffapply import apply_patch, copy_tree
from .elfinfo import (
    TargetInfo,
    check_patch_object,
    defined_objects,
    inlined_into,
    read_target,
)
from .errors import BuildError
from .generate import GeneratedTU, generate_patch_tu
from .reach import reach

C_SUFFIXES = (".c",)
HEADER_SUFFIXES = (".h",)

# flags that conflict with building a position-independent shared object, or that instrument
# code with a runtime the target may not have
_DROP_EXACT = {"-fPIE", "-fpie", "-fno-pic", "-fno-PIC", "-fno-pie", "-fno-PIE", "-no-pie",
               "-pie", "-static", "-static-pie", "-c", "-E", "-S", "-pg", "--coverage",
               "-fwhole-program", "-save-temps", "-shared"}
_DROP_PREFIX = ("-flto", "-fsanitize", "-fprofile", "-ftest-coverage", "-Werror", "-Wl,")
# -fno-common: a tentative definition the program compiled as COMMON must not become a
# definition --gc-sections cannot drop (the patch never owns the target's state)
PATCH_CFLAGS = ["-fPIC", "-fvisibility=hidden", "-ffunction-sections", "-fdata-sections",
                "-fno-common", "-Wno-error"]
LINK_FLAGS = ["-shared", "-nostartfiles", "-Wl,--gc-sections", "-Wl,-z,now",
              "-Wl,--build-id", "-Wl,-z,noexecstack"]


@dataclass
class BuildResult:
    """What `opus-bpf build` prints."""

    output: Path
    bundle_id: str
    functions_replaced: list[str]
    functions_added: list[str]
    bindings_count: int
    compile_seconds: float
    manifest: Manifest
    warnings: list[str] = field(default_factory=list)
    changes: dict[str, ChangeSet] = field(default_factory=dict)  # source path -> changes

    def summary(self) -> str:
        """One line, then one ``warning:`` line per warning."""
        new = [a.name for a in self.manifest.added_functions if a.reason == "new"]
        copied = [a.name for a in self.manifest.added_functions if a.reason != "new"]
        line = (f"{self.output}: bundle {self.bundle_id}, replaces "
                f"{', '.join(self.functions_replaced) or 'nothing'}"
                + (f", adds {', '.join(new)}" if new else "")
                + (f", copies inlined {', '.join(copied)}" if copied else "")
                + f", {self.bindings_count} bindings, compiled in {self.compile_seconds:.2f}s")
        return "\n".join([line] + [f"warning: {w}" for w in self.warnings])

    def to_dict(self) -> dict[str, object]:
        """For ``--json``."""
        return {"output": str(self.output), "bundle_id": self.bundle_id,
                "functions_replaced": self.functions_replaced,
                "functions_added": self.functions_added,
                "bindings_count": self.bindings_count,
                "compile_seconds": round(self.compile_seconds, 3),
                "warnings": self.warnings,
                "changes": {k: vars(v) for k, v in self.changes.items()},
                "manifest": self.manifest.to_dict()}


def compile_flags(args: list[str]) -> list[str]:
    """The program's flags minus what cannot go into a PIC shared object."""
    out: list[str] = []
    for a in args:
        if a in _DROP_EXACT or a.startswith(_DROP_PREFIX) or a.startswith("-M"):
            continue
        out.append(a)
    return out


def _compiler_version(cc: str) -> str:
    try:
        p = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
        return p.stdout.splitlines()[0] if p.stdout else cc
    except OSError:
        return cc


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BuildError(f"cannot run {cmd[0]}: {e}; install gcc") from e
    if p.returncode != 0:
        errs = [ln for ln in p.stderr.splitlines() if "error" in ln] or p.stderr.splitlines()
        first = errs[0].strip() if errs else f"exit status {p.returncode}"
        raise BuildError(f"{what} failed: {first}")


@dataclass
class _Unit:
    rel: str  # path relative to --src
    old_cmd: CompileCommand
    new_cmd: CompileCommand
    old_tu: TranslationUnit | None = None
    new_tu: TranslationUnit | None = None
    changes: ChangeSet | None = None
    gen: GeneratedTU | None = None


def _commands(rel: str, src: Path, tree: Path, cflags: list[str] | None,
              compdb: list[dict] | None) -> tuple[CompileCommand, CompileCommand] | None:
    """How *rel* was compiled (old tree) and how to compile it in the patched copy."""
    if compdb is not None:
        old = find_command(compdb, src / rel)
        if old is None:
            return None
    else:
        old = CompileCommand(src, rel, list(cflags or []))
    directory = old.directory.resolve()
    new_dir = tree / directory.relative_to(src) if _under(directory, src) else directory
    args: list[str] = []
    take_path = False
    for a in old.args:
        if take_path:
            args.append(_map_path(a, directory, src, tree))
            take_path = False
        elif a in _PATH_FLAGS:
            args.append(a)
            take_path = True
        else:
            pre = next((f for f in _PATH_FLAGS if a.startswith(f) and len(a) > len(f)), None)
            args.append(pre + _map_path(a[len(pre):], directory, src, tree) if pre else a)
    new = CompileCommand(new_dir, _map_path(old.file_arg, directory, src, tree), args,
                         old.compiler)
    return old, new


# The TUs are parsed only to compare functions: with __LINE__ fixed, a function below the fix
# whose only difference is the line number an assert macro expands to is not "changed" (the
# patch TU itself is compiled from the real text with #line, so replaced code keeps its lines).
# __FILE__ likewise: with an absolute file argument (CMake, an out-of-tree configure) the old TU
# names --src and the new one the patched copy, and every assert would differ.
_NO_LINE = ["-U__LINE__", "-D__LINE__=0", "-U__FILE__", '-D__FILE__=""',
            "-Wno-builtin-macro-redefined"]

_PATH_FLAGS = ("-isystem", "-iquote", "-idirafter", "-include", "-imacros", "-I")


def _under(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _map_path(value: str, directory: Path, src: Path, tree: Path) -> str:
    """A path argument of the original command, valid for the patched copy: paths into the
    source tree move to the copy; relative paths stay relative (so __FILE__ and the STT_FILE
    name stay as the build wrote them) whenever that still points at the right place."""
    p = Path(value)
    absolute = Path(os.path.normpath(p if p.is_absolute() else directory / p))
    inside = _under(absolute, src)
    if not p.is_absolute() and inside == _under(directory, src):
        return value
    return str(tree / absolute.relative_to(src)) if inside else str(absolute)


def build_bundle(src_dir: str | os.PathLike[str], patch_file: str | os.PathLike[str],
                 binary: str | os.PathLike[str], output: str | os.PathLike[str],
                 cflags: list[str] | str | None = None,
                 compile_commands: str | os.PathLike[str] | None = None,
                 *, cc: str | None = None, keep_dir: str | os.PathLike[str] | None = None,
                 analysis: object = None) -> BuildResult:
    """Build a bundle that replaces the functions *patch_file* changes in *binary*.

    *cflags* (list or shell string) apply to every file, with relative paths relative to
    *src_dir*; *compile_commands* gives per-file flags instead. Paths into *src_dir* (in either)
    are redirected to the patched copy, so changed headers are seen. *cc* overrides the
    compiler (default: the compile command's, without launchers like ccache; else gcc).
    *keep_dir*, when set, receives the patched tree and generated TUs for inspection.
    """
    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise BuildError(f"--src {src_dir} is not a directory; pass the source tree the binary "
                         f"was built from")
    target = read_target(binary)
    flags = parse_cflags(cflags) if cflags is not None else None
    compdb = load_compdb(Path(compile_commands)) if compile_commands else None
    warnings: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="opus-build-"))
    try:
        tree = tmp / "tree"
        try:
            copy_tree(src, tree)
        except (OSError, shutil.Error) as e:
            raise BuildError(f"cannot copy --src {src} to a work directory: {e}; check "
                             f"permissions and free space in {tmp.parent}") from e
        file_changes = apply_patch(tree, Path(patch_file))
        units = _select_units(file_changes, src, tree, flags, compdb)
        t0 = time.monotonic()
        taken: set[str] = set()
        for u in units:
            if cc is not None:
                u.old_cmd.compiler = u.new_cmd.compiler = cc
        for u in units:
            try:
                if _same_preprocessed(u, src, tree):
                    continue  # e.g. a TU that does not include the changed header
                u.old_tu = parse(u.old_cmd.file_arg, u.old_cmd.args + _NO_LINE,
                                 u.old_cmd.directory, cc=u.old_cmd.compiler)
                u.new_tu = parse(u.new_cmd.file_arg, u.new_cmd.args + _NO_LINE,
                                 u.new_cmd.directory, cc=u.new_cmd.compiler)
            except CFrontError as e:
                raise BuildError(e.message) from e
            u.changes = changed_functions(u.old_tu, u.new_tu)
        units = [u for u in units if u.changes and (u.changes.modified or u.changes.added)]
        if not units:
            raise BuildError(f"{patch_file} changes no function body the patch could replace "
                             f"(only comments, declarations or removed functions?)")
        so_path = tmp / "patch.so"
        objects: list[str] = []
        for i, u in enumerate(units):
            assert u.new_tu is not None and u.old_tu is not None and u.changes is not None
            gen = c_generator.CGenerator()
            for name in sorted(u.new_tu.globals.keys() & u.old_tu.globals.keys()):
                if gen.visit(u.new_tu.globals[name].node) != gen.visit(
                        u.old_tu.globals[name].node):
                    warnings.append(f"{u.rel}: the declaration of {name} changed; the running "
                                    f"program's {name} keeps its current value and type")
            for what in _changed_types(u.old_tu, u.new_tu):
                warnings.append(f"{u.rel}: {what} changed; data in the running program keeps "
                                f"the old layout, which the new code will misread")
            for name in u.changes.signature_changed:
                warnings.append(f"{u.rel}: the type of {name} changed; callers in the target "
                                f"still pass the old arguments and expect the old result")
            if u.changes.removed:
                warnings.append(f"{u.rel}: removed functions {', '.join(u.changes.removed)} "
                                f"stay in the target (their callers may still call them)")
            src_file = Path(u.new_cmd.directory) / u.new_cmd.file_arg
            text = src_file.read_text(errors="surrogateescape")
            base = os.path.basename(u.new_cmd.file_arg)
            if base not in target.symbols.files:
                raise BuildError(f"{target.path} has no STT_FILE symbol for {base}: it was not "
                                 f"built from this source file (or with LTO); check --src and "
                                 f"--binary")
            # old code of a changed function outside its own symbol (inlined copies, clones)
            # is reached by replacing the functions that hold it as well
            r = reach(target.path, target.symbols, base, u.new_tu, u.changes.modified)
            warnings += r.notes
            try:
                u.gen = generate_patch_tu(text, u.new_tu, u.old_tu,
                                          dataclasses.replace(u.changes, modified=r.replace),
                                          target.symbols, base, target.path, taken,
                                          copy=r.copy)
            except BuildError as e:
                held = [c for c in r.because if c not in u.changes.modified
                        and re.search(rf"\b{re.escape(c)}\b", e.message)]
                if not held:
                    raise
                raise BuildError(f"{e.message} ({held[0]} must be replaced too: it holds "
                                 f"{'; '.join(r.because[held[0]])})") from e
            warnings += u.gen.warnings
            src_file.write_text(u.gen.text, errors="surrogateescape")
            obj = tmp / f"tu{i}.o"
            args = compile_flags(u.new_cmd.args)
            if not any(a.startswith("-g") for a in args):
                args.append("-g")
            # debug info and __FILE__ name the user's tree, not the deleted temporary copy
            prefix_map = f"-ffile-prefix-map={tree}={src}"
            _run([u.new_cmd.compiler, *args, *PATCH_CFLAGS, prefix_map, "-c",
                  u.new_cmd.file_arg, "-o", str(obj)],
                 u.new_cmd.directory, f"compiling the patch TU for {u.rel}")
            objects.append(str(obj))
        link_extra = [a for a in compile_flags(units[0].new_cmd.args)
                      if a.startswith(("-m", "-pthread", "--sysroot", "-fuse-ld"))]
        linker = units[0].new_cmd.compiler
        _run([linker, *link_extra, *LINK_FLAGS, "-o", str(so_path), *objects], tmp,
             "linking patch.so")
        compile_seconds = time.monotonic() - t0
        manifest = _manifest(Path(output), target, units, linker, flags, src)
        internal = {n for u in units if u.new_tu is not None
                    for n, fs in u.new_tu.file_scope.items() if fs.static}
        check_patch_object(so_path, [b.slot for b in manifest.bindings],
                           [f.new_symbol for f in manifest.functions]
                           + [f.name for f in manifest.added_functions], internal)
        _refuse_state_copies(so_path, units, target)
        warnings += reach_warnings(target, manifest)
        so_bytes = so_path.read_bytes()
        manifest.analysis = analysis
        try:
            manifest = write_bundle(output, manifest, so_bytes)
        except BundleError as e:
            raise BuildError(e.message) from e
        if keep_dir is not None:
            shutil.copytree(tmp, keep_dir, dirs_exist_ok=True)
        return BuildResult(
            output=Path(output), bundle_id=manifest.id,
            functions_replaced=[f.name for f in manifest.functions],
            functions_added=[f.name for f in manifest.added_functions],
            bindings_count=len(manifest.bindings), compile_seconds=compile_seconds,
            manifest=manifest, warnings=warnings,
            changes={u.rel: u.changes for u in units if u.changes is not None})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _select_units(file_changes, src: Path, tree: Path, flags: list[str] | None,
                  compdb: list[dict] | None) -> list[_Unit]:
    units: list[_Unit] = []
    headers = False
    for fc in file_changes:
        if fc.path.endswith(HEADER_SUFFIXES):
            headers = True
            continue
        if not fc.path.endswith(C_SUFFIXES):
            continue
        if fc.created:
            raise BuildError(f"the patch creates {fc.path}: new source files are not supported; "
                             f"put new functions into an existing file")
        if fc.deleted:
            raise BuildError(f"the patch deletes {fc.path}: cannot live-patch that")
        cmds = _commands(fc.path, src, tree, flags, compdb)
        if cmds is None:
            raise BuildError(f"{fc.path} has no entry in the compile commands; pass the "
                             f"compile_commands.json of the build that produced the binary")
        units.append(_Unit(fc.path, *cmds))
    if headers:
        # a header change can change any TU that includes it: compare every known TU
        seen = {u.rel for u in units}
        for rel in _all_sources(src, compdb):
            if rel not in seen:
                cmds = _commands(rel, src, tree, flags, compdb)
                if cmds is not None:
                    units.append(_Unit(rel, *cmds))
                    seen.add(rel)
    if not units:
        raise BuildError("the patch changes no .c file or header; nothing to build")
    return units


def _all_sources(src: Path, compdb: list[dict] | None) -> list[str]:
    if compdb is not None:
        out = []
        for e in compdb:
            try:
                p = (Path(e["directory"]) / e["file"]).resolve()
                out.append(str(p.relative_to(src)))
            except (KeyError, ValueError, TypeError):
                continue
        return out
    return sorted(str(p.relative_to(src)) for p in src.rglob("*.c")
                  if not any(part.startswith(".") for part in p.relative_to(src).parts))


def _manifest(output: Path, target: TargetInfo, units: list[_Unit], cc: str,
              flags: list[str] | None, src: Path) -> Manifest:
    functions: list[ReplacedFunction] = []
    added: list[AddedFunction] = []
    bindings: list[Binding] = []
    for u in units:
        assert u.gen is not None and u.new_tu is not None
        base = os.path.basename(u.new_cmd.file_arg)
        for name in u.gen.replaced:
            fd = u.new_tu.functions[name]
            functions.append(ReplacedFunction(name, base, fd.is_static, name, u.rel))
        for name in u.gen.added:
            fd = u.new_tu.functions[name]
            added.append(AddedFunction(name, base, fd.is_static, u.rel, "new"))
        for name in u.gen.copied:
            fd = u.new_tu.functions[name]
            added.append(AddedFunction(name, base, fd.is_static, u.rel, "copied"))
        for s in u.gen.slots:
            bindings.append(Binding(s.slot, s.symbol, s.kind, s.binding, base, s.function,
                                    s.target_symbol))
    name = output.name[:-5] if output.name.endswith(".opus") else output.name
    used_flags = flags if flags is not None else compile_flags(units[0].old_cmd.args)
    return Manifest(
        name=name,
        target=Target(target.path, target.build_id, target.elf_type),
        patch_object=PatchObject("", 0),
        functions=functions, added_functions=added, bindings=bindings,
        build=BuildInfo(_compiler_version(cc), list(used_flags)),
    )


def reach_warnings(target: TargetInfo, manifest: Manifest) -> list[str]:
    """Safety net after ``reach``: inlined copies of a replaced function in functions the
    bundle keeps (only if the closure missed one; clone callers are found by ``reach``)."""
    out: list[str] = []
    replaced = {f.name for f in manifest.functions}
    for f in manifest.functions:
        callers = sorted(set(inlined_into(target.symbols.source, f.file, f.name)) - replaced)
        if callers:
            out.append(f"{f.name} is inlined into {', '.join(callers)} in the target: those "
                       f"call sites keep the old code; include the callers in the patch")
    return out


def _refuse_state_copies(so_path: Path, units: list[_Unit], target: TargetInfo) -> None:
    """The patch must never own a copy of target state: after --gc-sections a surviving
    definition of one of the target's (non-const) objects means some code uses it directly,
    missed by the slot rewriting; running it would silently fork the program's state."""
    have = defined_objects(so_path)
    for u in units:
        assert u.new_tu is not None and u.old_tu is not None
        base = os.path.basename(u.new_cmd.file_arg)
        for name, fs in u.new_tu.file_scope.items():
            if name not in have or fs.kind != "object" or not fs.defined_in_file:
                continue
            if name not in u.old_tu.file_scope or "const" in _quals(fs.decl.type):
                continue
            in_target = (target.symbols.local_sym(base, name) if fs.static
                         else target.symbols.global_sym(name))
            if in_target:
                raise BuildError(f"the patch object defines its own copy of {name}, which the "
                                 f"target owns ({base}): some reference escaped the slot "
                                 f"rewriting (a macro or attribute opus-bpf cannot see?); "
                                 f"the patch would fork the program's state")


def _quals(t) -> list[str]:
    while t is not None and type(t).__name__ != "TypeDecl":
        if type(t).__name__ == "PtrDecl":
            return list(t.quals)
        t = getattr(t, "type", None)
    return list(t.quals) if t is not None else []


def _same_preprocessed(u: _Unit, src: Path, tree: Path) -> bool:
    """Cheap pre-check (gcc -E is ~20x faster than parsing): identical preprocessed text,
    with the copy's path mapped back, means no function of the TU can have changed."""
    old = preprocess(u.old_cmd.file_arg, u.old_cmd.args, u.old_cmd.directory,
                     cc=u.old_cmd.compiler)
    new = preprocess(u.new_cmd.file_arg, u.new_cmd.args, u.new_cmd.directory,
                     cc=u.new_cmd.compiler)
    return old == new.replace(str(tree), str(src))


def _type_definitions(tu: TranslationUnit) -> dict[str, str]:
    """File-scope struct/union/enum definitions and typedefs, as canonical text."""
    gen = c_generator.CGenerator()
    out: dict[str, str] = {}
    for ext in tu.ast.ext:
        if isinstance(ext, c_ast.Typedef):
            out[f"typedef {ext.name}"] = gen.visit(ext)
        elif isinstance(ext, c_ast.Decl) and ext.name is None:
            t = ext.type
            if isinstance(t, (c_ast.Struct, c_ast.Union, c_ast.Enum)) and t.name and (
                    getattr(t, "decls", None) is not None
                    or getattr(t, "values", None) is not None):
                kind = type(t).__name__.lower()
                out[f"{kind} {t.name}"] = gen.visit(ext)
    return out


def _changed_types(old: TranslationUnit, new: TranslationUnit) -> list[str]:
    a, b = _type_definitions(old), _type_definitions(new)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
