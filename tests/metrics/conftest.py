"""Fixtures for the metrics tests: a tiny C target (compiled once) and a running copy of it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from opus_metrics_helpers import TARGET_C, install_prometheus


@pytest.fixture(scope="session")
def c_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small long-running C program with a build-id, compiled once per session."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/dev.sh setup installs it)")
    d = tmp_path_factory.mktemp("target")
    (d / "t.c").write_text(TARGET_C)
    subprocess.run(["gcc", "-O1", "-g", "-Wl,--build-id", "-o", str(d / "t"), str(d / "t.c")],
                   check=True)
    return d / "t"


@pytest.fixture
def running_target(c_target: Path) -> Iterator[subprocess.Popen]:
    p = subprocess.Popen([str(c_target)])
    yield p
    p.kill()
    p.wait()


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Debian's prometheus, installed on demand; the only reason to skip is that it cannot be."""
    exe = install_prometheus()
    if exe is None:
        pytest.skip("prometheus is not installed and could not be installed "
                    "(needs root and apt-get: apt-get install prometheus)")
    return exe
