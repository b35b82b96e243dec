"""Compile commands from the program's own build: run it once under a compiler wrapper.

`opus-bpf build --build 'make -j2'` needs to know how every translation unit was compiled
(defines, include paths, optimisation flags: the patch must be compiled exactly like the code it
replaces). A tree that already has a ``compile_commands.json`` (CMake's
``-DCMAKE_EXPORT_COMPILE_COMMANDS=ON``, bear) is used as it is. Otherwise the build command runs
once in a copy of the tree (``--src`` is never touched) with a directory first on ``PATH`` whose
``cc``/``gcc``/``clang``/... is a small wrapper: it appends the working directory and the
arguments to a log, then execs the real compiler found further down ``PATH``. Plain make,
configure+make and CMake all find the compiler that way.

The copy is made to compile again: sources and headers get a fresh mtime, so a tree that was
already built in place rebuilds every object whose rule names its source (objects are not
deleted: a Makefile may link objects it has no rule for, as redis does with its deps/); a
``CMakeCache.txt`` copied from another directory is removed (CMake refuses to reuse it) so the
build re-configures. Objects that are up to date by other means are not seen: pass a build
command that cleans first (``make distclean && make``) to capture those too.

Paths in the captured commands that point into the copy are rewritten to ``--src`` when that file
or directory exists there (the binary was built from ``--src``); other paths (an out-of-tree
build directory that only the copy has, generated headers) keep pointing into the copy, which is
kept next to the resulting ``compile_commands.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError

COMPILER_NAMES = ("cc", "gcc", "clang", "c89", "c99", "gcc-12", "clang-14", "clang-15",
                  "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-gcc-12")
SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".c++")
_TOUCH_SUFFIXES = SOURCE_SUFFIXES + (".h", ".hh", ".hpp", ".hxx", ".inc", ".def")
# invocations that do not compile: preprocessing, dependency listing, version probes
_NOT_COMPILING = {"-E", "-M", "-MM", "--version", "-v", "-dumpversion", "-dumpmachine",
                  "-print-prog-name", "-print-search-dirs"}

_WRAPPER = r'''#!{python} -I
import json, os, sys
log, wrapdir = {log!r}, {wrapdir!r}
name = os.path.basename(sys.argv[0])
real = None
for d in os.environ.get("PATH", "").split(os.pathsep):
    if not d or os.path.realpath(d) == wrapdir:
        continue
    c = os.path.join(d, name)
    if os.path.isfile(c) and os.access(c, os.X_OK):
        real = c
        break
if real is None:
    sys.stderr.write("opus-bpf compiler wrapper: no real %s on PATH\n" % name)
    sys.exit(127)
line = json.dumps({{"directory": os.getcwd(), "arguments": [real] + sys.argv[1:]}}) + "\n"
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode("utf-8", "surrogateescape"))
os.close(fd)
os.execv(real, [real] + sys.argv[1:])
'''


@dataclass
class Capture:
    """Where the compile commands came from."""

    path: Path  # the compile_commands.json to use
    captured: bool  # False: the tree's own compile_commands.json was reused
    entries: int
    seconds: float = 0.0
    workdir: Path | None = None  # the build copy (kept: commands may point into it)
    log: list[str] = field(default_factory=list)


def existing_compdb(src: Path) -> Path | None:
    """The tree's own compile_commands.json (top level or one build directory down) when its
    entries name files of this tree."""
    src = src.resolve()
    cands = [src / "compile_commands.json"]
    cands += sorted(p for p in src.glob("*/compile_commands.json"))
    for c in cands:
        try:
            data = json.loads(c.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, list) or not data:
            continue
        for e in data:
            try:
                f = Path(e["directory"]) / e["file"]
                f.resolve().relative_to(src)
                return c
            except (KeyError, TypeError, ValueError):
                continue
    return None


def _prepare_copy(src: Path, tree: Path) -> None:
    # objects are copied too (a Makefile may link objects it has no rule for)
    shutil.copytree(src, tree, symlinks=True, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".git", ".hg", ".svn", "*.opus", ".venv"))
    now = time.time()
    for root, dirs, files in os.walk(tree):
        rp = Path(root)
        if "CMakeCache.txt" in files:
            (rp / "CMakeCache.txt").unlink()
            shutil.rmtree(rp / "CMakeFiles", ignore_errors=True)
            dirs[:] = [d for d in dirs if d != "CMakeFiles"]
        for f in files:
            p = rp / f
            if p.is_symlink():
                continue
            if f.endswith(_TOUCH_SUFFIXES):
                os.utime(p, (now, now))


def _write_wrappers(wrapdir: Path, log: Path) -> None:
    wrapdir.mkdir(parents=True, exist_ok=True)
    text = _WRAPPER.format(python=sys.executable, log=str(log),
                           wrapdir=os.path.realpath(wrapdir))
    for name in COMPILER_NAMES:
        w = wrapdir / name
        w.write_text(text)
        w.chmod(w.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _sources(args: list[str], directory: Path) -> list[str]:
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ", "-include", "-imacros", "-x", "-I", "-D", "-U",
                 "-isystem", "-iquote", "-idirafter"):
            skip = True
            continue
        if not a.startswith("-") and a.endswith(SOURCE_SUFFIXES):
            out.append(a)
    return out


def _entries(log_lines: list[str]) -> list[dict]:
    """One entry per compiled source file (the last command wins, but a -fPIC one is not
    replaced by a non-PIC one: libtool's second, static compile), with other sources of a
    several-file command and its -o removed, so each entry compiles exactly one file."""
    by_file: dict[str, dict] = {}
    for line in log_lines:
        try:
            rec = json.loads(line)
            directory = Path(rec["directory"])
            argv = list(rec["arguments"])
        except (ValueError, KeyError, TypeError):
            continue
        args = argv[1:]
        if any(a in _NOT_COMPILING or a.startswith("-print-") for a in args):
            continue
        srcs = _sources(args, directory)
        for s in srcs:
            full = Path(os.path.normpath(directory / s))
            if not full.is_file() or "CompilerId" in full.parent.name:
                continue  # autoconf conftest.c, CMake compiler probes (deleted or not ours)
            others = set(srcs) - {s}
            keep: list[str] = []
            i = 0
            while i < len(args):
                a = args[i]
                if a == "-o" and len(srcs) > 1:
                    i += 2
                    continue
                if a in others:
                    i += 1
                    continue
                keep.append(a)
                i += 1
            if "-c" not in keep:
                keep.insert(0, "-c")
            pic = any(a in ("-fPIC", "-fpic") for a in keep)
            if not pic and by_file.get(str(full), {}).get("pic"):
                continue  # libtool compiles twice: the -fPIC object is the shared library's
            by_file[str(full)] = {"directory": str(directory), "file": s,
                                  "arguments": [argv[0], *keep], "pic": pic}
    return [{k: v for k, v in e.items() if k != "pic"} for e in by_file.values()]


def _rebase(value: str, copy: Path, src: Path) -> str:
    """An absolute path into the build copy -> the same path in --src when that exists."""
    p = Path(value)
    if not p.is_absolute():
        return value
    try:
        rel = Path(os.path.normpath(p)).relative_to(copy)
    except ValueError:
        return value
    return str(src / rel) if (src / rel).exists() else value


_PATH_FLAGS = ("-I", "-isystem", "-iquote", "-idirafter", "-include", "-imacros")


def _rebase_entry(e: dict, copy: Path, src: Path) -> dict:
    directory = _rebase(e["directory"], copy, src)
    moved = directory != e["directory"]

    def path_arg(v: str) -> str:
        if not moved and not Path(v).is_absolute():
            # a build directory only the copy has (configure run in expat/build): -I../../lib
            # names a directory of --src, whose patched copy the build must see (a changed
            # header); -I. (generated config.h) stays in the build copy
            return _rebase(os.path.normpath(Path(directory) / v), copy, src)
        if moved and not Path(v).is_absolute() and not (Path(directory) / v).exists() \
                and (Path(e["directory"]) / v).exists():
            # generated by the build (nginx's objs/ngx_auto_headers.h) in an unbuilt --src:
            # only the build copy has it
            return os.path.normpath(Path(e["directory"]) / v)
        return _rebase(v, copy, src)

    args: list[str] = [e["arguments"][0]]
    take = False
    for a in e["arguments"][1:]:
        if take:
            args.append(path_arg(a))
            take = False
        elif a in _PATH_FLAGS:
            args.append(a)
            take = True
        else:
            pre = next((f for f in _PATH_FLAGS if a.startswith(f) and len(a) > len(f)), None)
            args.append(pre + path_arg(a[len(pre):]) if pre else _rebase(a, copy, src))
    f = _rebase(e["file"], copy, src)
    # a relative file argument stays as written (so __FILE__ matches) when it still names the
    # same file of --src from the rebased directory; otherwise it becomes absolute
    if moved and not Path(f).is_absolute() and not (Path(directory) / f).exists():
        f = str(Path(e["directory"]) / f)
    elif not moved and not Path(f).is_absolute():
        # a build directory only the copy has (configure run in expat/build): the relative
        # file still names a source of --src, which is what the build must find
        f = _rebase(os.path.normpath(Path(directory) / f), copy, src)
        if Path(f).is_absolute():
            args = [f if a == e["file"] else a for a in args]
    return {"directory": directory, "file": f, "arguments": args}


def capture_compile_commands(src: str | os.PathLike[str], build_cmd: str,
                             out: str | os.PathLike[str] | None = None,
                             *, workdir: str | os.PathLike[str] | None = None,
                             reuse: bool = True, timeout: float | None = 3600) -> Capture:
    """compile_commands.json for *src*: the tree's own (when *reuse*), else captured by running
    *build_cmd* (a shell command, e.g. ``make -j2`` or ``./configure && make``) once in a copy.

    *out* is where to write it (default: ``<workdir>/compile_commands.json``); *workdir* holds
    the build copy (default: a new directory under the system temporary directory; the caller
    removes it when done with the commands).
    """
    src_p = Path(src).resolve()
    if not src_p.is_dir():
        raise BuildError(f"--src {src} is not a directory")
    if reuse:
        found = existing_compdb(src_p)
        if found is not None:
            n = len(json.loads(found.read_text()))
            return Capture(found, False, n)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="opus-capture-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    tree = work / "tree"
    wrapdir = work / "bin"
    log = work / "commands.log"
    log.unlink(missing_ok=True)
    try:
        _prepare_copy(src_p, tree)
    except (OSError, shutil.Error) as e:
        raise BuildError(f"cannot copy --src {src_p} to {tree}: {e}") from e
    _write_wrappers(wrapdir, log)
    env = dict(os.environ, PATH=f"{wrapdir}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("CC", "CXX"):  # an absolute CC from the caller would bypass the wrapper
        if env.get(var) and os.path.isabs(shlex.split(env[var])[0]):
            env.pop(var)
    t0 = time.monotonic()
    try:
        p = subprocess.run(build_cmd, shell=True, cwd=tree, env=env, capture_output=True,
                           text=True, errors="replace", timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"the build command `{build_cmd}` did not finish in {timeout:.0f} s")\
            from e
    seconds = time.monotonic() - t0
    out_lines = (p.stdout + p.stderr).splitlines()
    (work / "build.log").write_text("\n".join(out_lines) + "\n")
    if p.returncode != 0:
        errs = [ln for ln in out_lines if "error:" in ln or "Error " in ln] or out_lines[-3:]
        raise BuildError(f"the build command `{build_cmd}` failed in a copy of {src_p} (exit "
                         f"{p.returncode}): {errs[0].strip() if errs else ''}; "
                         f"its output is in {work}/build.log")
    lines = log.read_text(errors="surrogateescape").splitlines() if log.exists() else []
    entries = [_rebase_entry(e, tree, src_p) for e in _entries(lines)]
    if not entries:
        raise BuildError(f"the build command `{build_cmd}` compiled no C file through "
                         f"cc/gcc/clang on PATH (up to date? an absolute compiler path in the "
                         f"Makefile?); pass --compile-commands or --cflags instead")
    dest = Path(out) if out else work / "compile_commands.json"
    dest.write_text(json.dumps(entries, indent=1) + "\n")
    return Capture(dest, True, len(entries), seconds, work, out_lines[-20:])
