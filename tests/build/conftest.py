"""Fixtures for patch-build tests: real gcc builds of tests/build/data programs."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
COUNTER = DATA / "counter" / "src"
CFLAGS = ["-O2", "-g"]

if shutil.which("gcc") is None or shutil.which("patch") is None:
    pytest.skip("needs gcc and patch", allow_module_level=True)


def gcc(src_dir: Path, out: Path, *extra: str, sources: tuple[str, ...] = ("server.c",)) -> Path:
    subprocess.run(["gcc", *CFLAGS, *extra, "-o", str(out), *sources], cwd=src_dir, check=True)
    return out


@pytest.fixture(scope="session")
def counter_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The counter program built non-PIE and PIE (-O2 -g), as a real build would."""
    d = tmp_path_factory.mktemp("bins")
    return {"nopie": gcc(COUNTER, d / "server_nopie", "-no-pie", "-fno-pie"),
            "pie": gcc(COUNTER, d / "server_pie", "-fPIE", "-pie"),
            # globals become local symbols after an empty STT_FILE in .symtab
            "hidden": gcc(COUNTER, d / "server_hidden", "-fPIE", "-pie",
                          "-fvisibility=hidden")}


def unified_diff(src_dir: Path, rel: str, new_text: str) -> str:
    old = (src_dir / rel).read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new_text.splitlines(keepends=True),
                                        f"a/{rel}", f"b/{rel}"))


@pytest.fixture
def make_diff(tmp_path: Path) -> Callable[..., Path]:
    """make_diff([(old, new), ...], rel="server.c", src=COUNTER) -> path of a -p1 diff."""
    counter = [0]

    def make(edits: list[tuple[str, str]], rel: str = "server.c", src: Path = COUNTER) -> Path:
        text = (src / rel).read_text()
        for old, new in edits:
            assert old in text, f"test edit does not match the source: {old!r}"
            text = text.replace(old, new, 1)
        counter[0] += 1
        p = tmp_path / f"edit{counter[0]}.diff"
        p.write_text(unified_diff(src, rel, text))
        return p

    return make
