"""Helpers for patch-build tests, importable by name (every tests/*/conftest.py is a module
called `conftest`, so tests must not import from it)."""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

DATA = Path(__file__).parent / "data"
COUNTER = DATA / "counter" / "src"
CFLAGS = ["-O2", "-g"]


def gcc(src_dir: Path, out: Path, *extra: str, sources: tuple[str, ...] = ("server.c",)) -> Path:
    subprocess.run(["gcc", *CFLAGS, *extra, "-o", str(out), *sources], cwd=src_dir, check=True)
    return out


def unified_diff(src_dir: Path, rel: str, new_text: str) -> str:
    old = (src_dir / rel).read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new_text.splitlines(keepends=True),
                                        f"a/{rel}", f"b/{rel}"))
