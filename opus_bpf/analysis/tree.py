"""From a source tree and a diff to a Report: copy, patch, preprocess and parse old and new of
every translation unit the diff touches, then run the rules."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pycparser import c_parser

from ..cfront.errors import CFrontError
from ..errors import OpusError
from .analyze import analyze_patch
from .report import Finding, Report, Verdict
from .tuindex import Unit
from .xtu import ExternalResolver

_SHIM = Path(__file__).resolve().parent.parent / "cfront" / "gnu_shim.h"
_KEEP_FLAGS = ("-I", "-D", "-U", "-include", "-isystem", "-iquote", "-std")


class PatchError(OpusError):
    """The diff does not apply to the tree, or the tree/diff/database cannot be read.

    An OpusError: the CLI prints the one-line message and exits 1 (0/3/4 stay verdicts).
    """


def analyze_tree(
    src_dir: str | Path,
    patch_file: str | Path,
    cflags: Sequence[str] | str | None = None,
    compile_commands: str | Path | None = None,
) -> Report:
    """Apply `patch_file` to a copy of `src_dir` and analyse every TU it changes.

    `cflags` apply to every file; with `compile_commands` each file gets its own flags.
    The original tree is only read.
    """
    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise PatchError(f"source tree {src_dir} is not a directory")
    if not Path(patch_file).is_file():
        raise PatchError(f"patch {patch_file} does not exist")
    flags = shlex.split(cflags) if isinstance(cflags, str) else list(cflags or [])
    try:
        db = _load_compile_commands(Path(compile_commands), src) if compile_commands else {}
    except (OSError, ValueError, KeyError) as exc:
        raise PatchError(f"cannot read compilation database {compile_commands}: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="opus-analyze-") as tmp:
        new_root = Path(tmp) / "new"
        shutil.copytree(src, new_root, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "*.o", "*.so", "*.a"))
        touched = apply_patch(new_root, Path(patch_file).resolve())
        direct, via_header = _affected_tus(touched, src, new_root, db)
        threads = thread_routines_in_tree(src) | thread_routines_in_tree(new_root)
        # without a compilation database, files that merely include a changed header may not
        # be part of this build (other platforms): skip those that do not preprocess
        return _analyze_files(direct + via_header, src, new_root, flags, db,
                              optional=set() if db else set(via_header), threads=threads)


def analyze_sources(old_src: str, new_src: str, name: str = "input.c",
                    cflags: Sequence[str] = ()) -> Report:
    """Analyse two versions of one self-contained C file given as text."""
    with tempfile.TemporaryDirectory(prefix="opus-analyze-") as tmp:
        old_root, new_root = Path(tmp) / "old", Path(tmp) / "new"
        for root, text in ((old_root, old_src), (new_root, new_src)):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return _analyze_files([name], old_root, new_root, list(cflags), {})


def _analyze_files(files: list[str], old_root: Path, new_root: Path, flags: list[str],
                   db: dict[str, tuple[list[str], str]],
                   optional: set[str] | None = None, threads: set[str] | None = None) -> Report:
    """Parse old and new of each file; unparsable ones become findings (or notes when optional)."""
    olds: dict[str, Unit] = {}
    notes: list[str] = []
    news: dict[str, Unit] = {}
    errors: list[Finding] = []
    for rel in files:
        fl, _ = db.get(rel, (flags, ""))
        try:
            old = parse_unit(old_root, rel, fl) if (old_root / rel).exists() else None
            new = parse_unit(new_root, rel, fl) if (new_root / rel).exists() else None
        except (c_parser.ParseError, subprocess.CalledProcessError, RuntimeError,
                CFrontError) as exc:
            if optional and rel in optional:
                notes.append(f"skipped {rel}: it includes a changed header but does not "
                             f"preprocess/parse with these flags ({_short(exc)})")
                continue
            errors.append(Finding("parse-error", Verdict.UNSUPPORTED,
                                  f"cannot parse {rel}: {_short(exc)}", file=rel, line=1))
            continue
        if old is None or new is None:
            errors.append(Finding(
                "parse-error", Verdict.UNSUPPORTED,
                f"{rel} was {'added' if old is None else 'removed'} by the patch; a new or "
                "deleted translation unit cannot be applied by swapping function bodies",
                file=rel, line=1))
            continue
        olds[rel], news[rel] = old, new
    externals: tuple = (None, None)
    if db:
        # a compilation database names the program's other TUs: calls into them get summaries
        def flags_for(rel: str) -> list[str]:
            return db.get(rel, (flags, ""))[0]

        externals = tuple(
            ExternalResolver(root, list(db), lambda r, rel: parse_unit(r, rel, flags_for(rel)))
            for root in (old_root, new_root)
        )
    report = analyze_patch(olds, news, thread_routines=threads or (), externals=externals)
    report.global_findings[:0] = errors
    report.notes.extend(notes)
    for e in errors:
        if e.file and e.file not in report.files:
            report.files.append(e.file)
    return report


def _short(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        return (err or str(exc)).strip().splitlines()[0] if (err or "").strip() else str(exc)
    return str(exc)


def parse_unit(root: Path, rel: str, flags: list[str]) -> Unit:
    """Preprocess and parse `root/rel`; coordinates stay relative to `root`.

    Uses the shared front end (opus_bpf.cfront) when it provides `parse`, else gcc -E with the
    GNU shim and pycparser directly.
    """
    from opus_bpf import cfront

    parse = getattr(cfront, "parse", None)
    if parse is not None:
        tu = parse(rel, flags, str(root))
        return Unit(ast=tu.ast, path=rel, root=str(root))
    cmd = ["gcc", "-E", "-std=gnu11", "-D__STDC_NO_ATOMICS__"]
    if _SHIM.exists():
        cmd += ["-include", str(_SHIM)]
    cmd += [*flags, rel]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[0] if res.stderr.strip() else "cpp")
    ast = c_parser.CParser().parse(res.stdout, rel)
    return Unit(ast=ast, path=rel, root=str(root))


_THREAD_CALL = re.compile(r"\b(pthread_create|thrd_create)\s*\(")


def _call_args(text: str, start: int) -> list[str]:
    """Top-level comma-separated arguments of the call whose '(' is at `start`."""
    depth, cur, out = 0, [], []
    for ch in text[start:start + 2000]:
        if ch in "([{":
            depth += 1
            if depth == 1:
                continue
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                out.append("".join(cur).strip())
                return out
        elif ch == "," and depth == 1:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    return out


def thread_routines_in_tree(root: Path) -> set[str]:
    """Start routines named in pthread_create/thrd_create calls anywhere in the tree: a thread
    started from another TU still runs the function this patch may change."""
    out: set[str] = set()
    for p in root.rglob("*.c"):
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        if "_create" not in text:
            continue
        for m in _THREAD_CALL.finditer(text):
            args = _call_args(text, m.end() - 1)
            pos = 2 if m.group(1) == "pthread_create" else 1
            if len(args) > pos:
                ids = re.findall(r"[A-Za-z_]\w*", args[pos])
                if ids:
                    out.add(ids[-1])  # "(void *(*)(void *))&worker" -> worker
    return out


# ---- patch handling -----------------------------------------------------------------------
def _diff_paths(text: str) -> list[tuple[str, str]]:
    """(old, new) file names of each file section of a unified diff."""
    out = []
    old = None
    for line in text.splitlines():
        if line.startswith("--- "):
            old = line[4:].split("\t")[0].strip()
        elif line.startswith("+++ ") and old is not None:
            out.append((old, line[4:].split("\t")[0].strip()))
            old = None
    return out


def apply_patch(root: Path, patch_file: Path) -> list[str]:
    """Apply a unified diff inside `root` (strip level guessed); return touched paths."""
    text = patch_file.read_text(errors="replace")
    for p in (1, 0, 2, 3):
        dry = subprocess.run(
            ["patch", f"-p{p}", "--dry-run", "--batch", "--forward", "-s", "-i", str(patch_file)],
            cwd=root, capture_output=True, text=True)
        if dry.returncode == 0:
            subprocess.run(["patch", f"-p{p}", "--batch", "--forward", "-s", "-i",
                            str(patch_file)], cwd=root, capture_output=True, text=True,
                           check=True)
            touched = []
            for a, b in _diff_paths(text):
                path = b if b != "/dev/null" else a
                parts = Path(path).parts[p:]
                if parts:
                    touched.append(str(Path(*parts)))
            return touched
    raise PatchError(f"{patch_file} does not apply to {root} (tried -p1, -p0, -p2, -p3)")


def _includes(text: str, names: set[str]) -> bool:
    """Does the text #include a file with one of these names?"""
    return any(Path(m.group(1)).name in names for m in _INCLUDE.finditer(text))


_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def _affected_tus(touched: list[str], old_root: Path, new_root: Path,
                  db: dict[str, tuple[list[str], str]]) -> tuple[list[str], list[str]]:
    """(changed .c files, .c files that include a changed header directly or through other
    headers). Headers are matched by file name, which may over-select: harmless."""
    direct = [t for t in touched if t.endswith(".c")]
    headers = {Path(t).name for t in touched if not t.endswith(".c")}
    if not headers:
        return direct, []
    texts: dict[str, str] = {}
    for p in new_root.rglob("*"):
        if p.suffix in (".c", ".h") and p.is_file():
            try:
                texts[str(p.relative_to(new_root))] = p.read_text(errors="replace")
            except OSError:
                continue
    grew = True
    while grew:
        grew = False
        for rel, text in texts.items():
            name = Path(rel).name
            if rel.endswith(".h") and name not in headers and _includes(text, headers):
                headers.add(name)
                grew = True
    candidates = list(db) if db else [r for r in texts if r.endswith(".c")]
    via = [c for c in sorted(candidates)
           if c not in direct and c in texts and _includes(texts[c], headers)]
    return direct, via


def _load_compile_commands(path: Path, src: Path) -> dict[str, tuple[list[str], str]]:
    """file (relative to the tree) -> (preprocessor flags, directory)."""
    out: dict[str, tuple[list[str], str]] = {}
    for entry in json.loads(path.read_text()):
        args = entry.get("arguments") or shlex.split(entry.get("command", ""))
        directory = Path(entry.get("directory", "."))
        f = Path(entry["file"])
        f = f if f.is_absolute() else directory / f
        try:
            rel = str(f.resolve().relative_to(src))
        except ValueError:
            continue
        flags: list[str] = []
        i = 1
        while i < len(args):
            a = args[i]
            if a in ("-I", "-D", "-U", "-include", "-isystem", "-iquote") and i + 1 < len(args):
                val = args[i + 1]
                if a in ("-I", "-isystem", "-iquote", "-include"):
                    val = _rebase(val, directory, src)
                flags += [a, val]
                i += 2
                continue
            if a.startswith(_KEEP_FLAGS):
                for pre in ("-I", "-isystem", "-iquote"):
                    if a.startswith(pre) and len(a) > len(pre):
                        a = pre + _rebase(a[len(pre):], directory, src)
                        break
                flags.append(a)
            i += 1
        out[rel] = (flags, str(directory))
    return out


def _rebase(p: str, directory: Path, src: Path) -> str:
    """Include paths become relative to the tree root, so they work in the patched copy."""
    full = Path(p) if Path(p).is_absolute() else directory / p
    try:
        return str(full.resolve().relative_to(src)) or "."
    except ValueError:
        return str(full)
