"""Fixtures for runtime tests: compiled C targets, real bundles from `opus-bpf build`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from rtharness import CFLAGS, TARGETS, Proc, need_root, opus

pytestmark = pytest.mark.root


@pytest.fixture
def run_target():
    need_root()
    procs: list[Proc] = []

    def start(binary: Path | str, *args: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc([str(binary), *args], env=env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Compile a target once per session: returns (source dir copy, binary)."""
    root = tmp_path_factory.mktemp("targets")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str, extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
        key = name + "|" + " ".join(extra)
        if key not in cache:
            src = root / (name + ("-" + "-".join(x.strip("-") for x in extra) if extra else ""))
            shutil.copytree(TARGETS / name, src)
            binary = src / name
            sources = sorted(str(c) for c in src.glob("*.c"))
            subprocess.run(
                ["gcc", *CFLAGS, *extra, "-pthread", "-o", str(binary), *sources], check=True
            )
            cache[key] = (src, binary)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def bundle(built, tmp_path_factory):
    """Build a bundle with the real `opus-bpf build` for target `name` and diff `diff`."""
    out = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple, Path] = {}

    def get(name: str, diff: str = "fix", extra: tuple[str, ...] = ()) -> Path:
        key = (name, diff, extra)
        if key not in cache:
            src, binary = built(name, extra)
            path = out / f"{name}-{diff}{'-'.join(extra)}.opus"
            res = opus(
                "build",
                "--src",
                str(src),
                "--patch",
                str(TARGETS / name / f"{diff}.diff"),
                "--binary",
                str(binary),
                "--cflags",
                " ".join([*CFLAGS, *extra]),
                "-o",
                str(path),
                "--accept-review",
            )
            assert res.returncode == 0, res.stderr
            cache[key] = path
        return cache[key]

    return get
