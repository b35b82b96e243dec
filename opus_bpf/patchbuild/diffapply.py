"""Apply a unified diff to a private copy of the source tree, never to the user's tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError

_IGNORE = shutil.ignore_patterns(".git", ".hg", ".svn", "*.o", "*.opus", "__pycache__",
                                 ".venv")


@dataclass
class FileChange:
    """One file the diff touches, as a path relative to the source root."""

    path: str
    created: bool = False
    deleted: bool = False


def _diff_paths(diff_text: str) -> list[tuple[str, str]]:
    """(old, new) path pairs from ``---``/``+++`` headers, timestamps stripped."""
    pairs: list[tuple[str, str]] = []
    old: str | None = None
    for line in diff_text.splitlines():
        if line.startswith("--- "):
            old = _strip_header(line[4:])
        elif line.startswith("+++ ") and old is not None:
            pairs.append((old, _strip_header(line[4:])))
            old = None
    return pairs


def _strip_header(s: str) -> str:
    s = s.split("\t", 1)[0].rstrip()
    if s.startswith('"') and s.endswith('"'):
        s = s[1:-1]
    return s


def _strip(path: str, level: int) -> str:
    if path == "/dev/null":
        return path
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts[level:])


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True, ignore=_IGNORE, dirs_exist_ok=True)


def apply_patch(tree: Path, patch_file: Path) -> list[FileChange]:
    """Apply *patch_file* inside *tree* with ``patch -p1`` (or ``-p0``); return what changed."""
    try:
        diff_text = patch_file.read_text(errors="replace")
    except OSError as e:
        raise BuildError(f"cannot read patch {patch_file}: {e.strerror}; check the path") from e
    pairs = _diff_paths(diff_text)
    if not pairs:
        raise BuildError(f"{patch_file} is not a unified diff (no ---/+++ headers); create it "
                         f"with `diff -u` or `git diff`")
    attempts: list[tuple[int, int, str]] = []
    for level in (1, 0):
        paths = [(_strip(o, level), _strip(n, level)) for o, n in pairs]
        out = _run_patch(tree, patch_file, level, dry_run=True)
        if out is None:
            out = _run_patch(tree, patch_file, level, dry_run=False)
            if out is not None:
                raise BuildError(f"patch failed after a clean dry run: {out}")
            changes = []
            for o, n in paths:
                if n == "/dev/null":
                    changes.append(FileChange(o, deleted=True))
                else:
                    changes.append(FileChange(n, created=(o == "/dev/null")))
            return changes
        found = any((tree / p).exists() for o, n in paths for p in (o, n) if p != "/dev/null")
        attempts.append((0 if found else 1, level, out))
    attempts.sort()
    missing, level, out = attempts[0]
    if missing:  # no strip level found the files
        names = ", ".join(n for _, n in pairs[:3])
        raise BuildError(f"{patch_file} names files not found under the source tree ({names}); "
                         f"pass the right --src (diff paths are tried with -p1 and -p0)")
    raise BuildError(f"{patch_file} does not apply to the source tree (-p{level}): {out}; "
                     f"regenerate the diff against the sources the binary was built from")


_FAIL = re.compile(r"Hunk #(\d+) FAILED at (\d+)")


def _run_patch(tree: Path, patch_file: Path, level: int, dry_run: bool) -> str | None:
    """None on success, else a one-line summary naming the file and failing hunks."""
    cmd = ["patch", f"-p{level}", "--batch", "--forward", "--no-backup-if-mismatch",
           "--reject-file=-", "-i", str(patch_file.resolve())]
    if dry_run:
        cmd.append("--dry-run")
    try:
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BuildError(f"cannot run patch(1): {e}; install GNU patch") from e
    if proc.returncode == 0:
        return None
    current = "?"
    failures: list[str] = []
    other: list[str] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"(?:checking|patching) file (.+)", line)
        if m:
            current = m.group(1).strip("'\"`")
            continue
        f = _FAIL.search(line)
        if f:
            failures.append(f"{current} hunk #{f.group(1)} FAILED at line {f.group(2)}")
        elif "previously applied" in line or "Reversed" in line:
            failures.append(f"{current}: already applied (reversed patch?)")
        elif line.strip() and not line.startswith(("Hunk", "1 out", "2 out")):
            other.append(line.strip())
    if failures:
        return "; ".join(dict.fromkeys(failures))
    return other[0] if other else f"patch exited {proc.returncode}"
