"""Fixtures for patch-build tests: real gcc builds of tests/build/data programs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from buildharness import COUNTER, gcc, unified_diff

if shutil.which("gcc") is None or shutil.which("patch") is None:
    pytest.skip("needs gcc and patch", allow_module_level=True)


@pytest.fixture(scope="session")
def counter_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The counter program built non-PIE and PIE (-O2 -g), as a real build would."""
    d = tmp_path_factory.mktemp("bins")
    return {"nopie": gcc(COUNTER, d / "server_nopie", "-no-pie", "-fno-pie"),
            "pie": gcc(COUNTER, d / "server_pie", "-fPIE", "-pie"),
            # globals become local symbols after an empty STT_FILE in .symtab
            "hidden": gcc(COUNTER, d / "server_hidden", "-fPIE", "-pie",
                          "-fvisibility=hidden")}


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
