"""One fix out of a quilt series (Debian's ``debian/patches/series``).

Security fixes reach users as one more patch at the end of a package's series. The running
binary was built from the series *before* that patch; the patch itself is the fix. So the
"before" tree is a copy of ``--src`` brought to "every patch listed before NAME applied, NAME
and later ones not": it does not matter whether ``--src`` is the pristine upstream tree, the
tree the binary was built from, or a fully patched ``apt-get source`` tree (``.pc/``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .diffapply import copy_tree
from .errors import BuildError


@dataclass(frozen=True)
class SeriesPatch:
    """One line of a series file: the patch file and its strip level (``-pN``, default 1)."""

    name: str
    path: Path
    level: int = 1


def series_entries(text: str) -> list[tuple[str, int]]:
    """(patch name, strip level) of each line of a quilt series text, in order (comments and
    blank lines skipped, ``-pN`` read, level 1 by default)."""
    out: list[tuple[str, int]] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = shlex.split(line)
        level = 1
        for w in words[1:]:
            if w.startswith("-p") and w[2:].isdigit():
                level = int(w[2:])
        out.append((words[0], level))
    return out


def read_series(series: Path) -> list[SeriesPatch]:
    """The patches of a quilt series file, in order."""
    try:
        text = series.read_text(errors="replace")
    except OSError as e:
        raise BuildError(f"cannot read the series {series}: {e.strerror}; check the path") from e
    return [SeriesPatch(name, series.parent / name, level) for name, level in series_entries(text)]


def looks_like_series(path: Path) -> bool:
    """A file named ``series``, or one whose lines all name files next to it (not a diff)."""
    if path.name == "series":
        return True
    try:
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(errors="replace")
                 .splitlines()]
    except OSError:
        return False
    names = [ln.split()[0] for ln in lines if ln]
    return bool(names) and all((path.parent / n).is_file() for n in names)


def _run(tree: Path, p: SeriesPatch, *, reverse: bool, dry_run: bool) -> tuple[bool, bool]:
    """(applies, applies exactly: no offset, no fuzz)."""
    # --forward in both directions: with --batch, patch(1) otherwise "helpfully" applies a
    # patch the other way round when it looks reversed
    cmd = ["patch", f"-p{p.level}", "--batch", "--forward", "--no-backup-if-mismatch",
           "--reject-file=-", "-i", str(p.path.resolve())]
    cmd += ["-R"] if reverse else []
    if dry_run:
        cmd.append("--dry-run")
    try:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BuildError(f"cannot run patch(1): {e}; install GNU patch") from e
    out = proc.stdout + proc.stderr
    return proc.returncode == 0, proc.returncode == 0 and not re.search(r"offset|fuzz", out)


def _patch(tree: Path, p: SeriesPatch, *, reverse: bool, dry_run: bool) -> bool:
    return _run(tree, p, reverse=reverse, dry_run=dry_run)[0]


def _is_applied(tree: Path, p: SeriesPatch) -> bool:
    """Whether *tree* already has *p*, when no .pc/ says so. A patch that only adds lines
    applies a second time (at an offset, with fuzz), so both directions are tried and an
    exact match decides."""
    rev, rev_exact = _run(tree, p, reverse=True, dry_run=True)
    fwd, fwd_exact = _run(tree, p, reverse=False, dry_run=True)
    if rev != fwd:
        return rev
    if not rev:
        return False  # neither: the caller reports it
    if rev_exact != fwd_exact:
        return rev_exact
    raise BuildError(f"cannot tell whether {p.name} is already applied in --src (it applies "
                     f"both ways); pass the upstream tree or one with quilt's .pc/")


def _applied_by_quilt(src: Path) -> list[str] | None:
    """Patches ``.pc/applied-patches`` lists (quilt and dpkg-source keep it), None without."""
    pc = src / ".pc" / "applied-patches"
    if not pc.is_file():
        return None
    return [ln.strip() for ln in pc.read_text(errors="replace").splitlines() if ln.strip()]


def prepare_before(src: Path, series: Path, pick: str, dest: Path) -> tuple[Path, list[str]]:
    """Copy *src* to *dest* as the series leaves it just before *pick*; return the fix's path
    and what was done (``applied X``, ``reverted Y``), for the user to see."""
    patches = read_series(series)
    names = [p.name for p in patches]
    if pick not in names:
        near = ", ".join(n for n in names if pick.lower() in n.lower()) or ", ".join(names[-3:])
        raise BuildError(f"--pick {pick} is not in {series} (did you mean: {near}?)")
    idx = names.index(pick)
    fix = patches[idx]
    if not fix.path.is_file():
        raise BuildError(f"{series} lists {pick} but {fix.path} does not exist")
    copy_tree(src, dest)
    done: list[str] = []
    quilt = _applied_by_quilt(src)
    # 1. patches from NAME on that the tree already has: revert them, last first
    for p in reversed(patches[idx:]):
        applied = (p.name in quilt) if quilt is not None else _is_applied(dest, p)
        if applied:
            if not _patch(dest, p, reverse=True, dry_run=False):
                raise BuildError(f"{p.name} is applied in --src but does not revert cleanly; "
                                 f"pass a tree without it (e.g. the upstream sources)")
            done.append(f"reverted {p.name}")
    # 2. patches before NAME the tree does not have yet: apply them in order
    for p in patches[:idx]:
        if quilt is not None and p.name in quilt:
            continue
        if quilt is None and _is_applied(dest, p):
            continue  # already in the tree (it was built with it)
        if _patch(dest, p, reverse=False, dry_run=True):
            _patch(dest, p, reverse=False, dry_run=False)
            done.append(f"applied {p.name}")
        else:
            raise BuildError(f"{p.name} (before {pick} in the series) neither applies to --src "
                             f"nor is already applied; pass the tree the binary was built from")
    if not _patch(dest, fix, reverse=False, dry_run=True):
        raise BuildError(f"{pick} does not apply to --src with the patches before it in the "
                         f"series; check that --src is that package's source")
    return fix.path, done


def rebase_compdb(entries: list[dict], src: Path, dest: Path) -> list[dict]:
    """compile_commands entries of the build of *src*, pointing into *dest* instead (the
    "before" copy is what the build compares and compiles)."""
    a, b = str(src.resolve()), str(dest)

    def move(s: str) -> str:
        return s.replace(a + "/", b + "/") if (a + "/") in s else (b if s == a else s)

    out = []
    for e in entries:
        e = dict(e)
        for k in ("directory", "file", "output"):
            if isinstance(e.get(k), str):
                e[k] = move(e[k])
        if isinstance(e.get("arguments"), list):
            e["arguments"] = [move(x) for x in e["arguments"]]
        if isinstance(e.get("command"), str):
            e["command"] = move(e["command"])
        out.append(e)
    return out


@dataclass
class Picked:
    """What ``build --patch SERIES --pick NAME`` builds from: the "before" tree, the fix, the
    compile commands moved to that tree (if any were given), and the steps taken. ``close()``
    removes the temporary tree."""

    src: Path
    patch: Path
    compile_commands: Path | None
    steps: list[str]
    tmp: Path

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def pick_from_series(src: Path, series: Path, pick: str | None,
                     compile_commands: Path | None = None) -> Picked:
    """The "before" tree of *pick* in a temporary directory (removed again on failure)."""
    if pick is None:
        raise BuildError(f"{series} is a quilt series, not a diff: choose the fix with "
                         f"--pick NAME (one of its patches)")
    tmp = Path(tempfile.mkdtemp(prefix="opus-series-"))
    try:
        before = tmp / "before"
        fix, steps = prepare_before(Path(src), Path(series), pick, before)
        cc = None
        if compile_commands is not None:
            try:
                entries = json.loads(Path(compile_commands).read_text())
            except (OSError, ValueError) as e:
                raise BuildError(f"cannot read {compile_commands}: {e}") from e
            cc = tmp / "compile_commands.json"
            cc.write_text(json.dumps(rebase_compdb(entries, Path(src), before), indent=1))
        return Picked(before, fix, cc, steps, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
