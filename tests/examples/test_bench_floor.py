"""bench/: the target, the floor measurement and work_fix.diff, on real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

from benchlib import Target, build, floor  # noqa: E402


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """target and floor built into a temporary directory."""
    return build(tmp_path_factory.mktemp("bench-build"))


@pytest.mark.parametrize("prog", ["target.c", "floor.c"])
def test_c_sources_compile_warning_free(tmp_path: Path, prog: str) -> None:
    """The bench programs build with -O2 -g -Wall -Wextra -Werror."""
    r = subprocess.run(["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", prog,
                        "-o", str(tmp_path / "a.out")], cwd=BENCH, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_work_fix_diff_changes_work(tmp_path: Path, bins: dict[str, Path]) -> None:
    """work_fix.diff applies with patch -p1 and changes what work(x) returns."""
    shutil.copy2(BENCH / "target.c", tmp_path / "target.c")
    with open(BENCH / "work_fix.diff") as diff:
        subprocess.run(["patch", "-p1", "--quiet", "-d", str(tmp_path)], stdin=diff, check=True)
    subprocess.run(["gcc", "-O2", "-g", "-pthread", "target.c", "-o", "fixed"], cwd=tmp_path,
                   check=True)
    with Target(bins["target"], "paced", 1) as old, Target(tmp_path / "fixed", "paced", 1) as new:
        assert old.probe(1) != new.probe(1)
        assert old.probe(7) != new.probe(7)


def test_target_modes_call_work(bins: dict[str, Path]) -> None:
    """spin and paced workers keep calling work(); percall prints timed batches."""
    for mode in ("spin", "paced"):
        with Target(bins["target"], mode, 2) as t:
            first = t.calls()
            time.sleep(0.1)
            assert t.calls() > first
    with Target(bins["target"], "percall", 1, ["100000", "10"]) as t:
        batch = json.loads(t.command("", '{"thread"'))
        assert batch["calls"] == 100000 and batch["ns_per_call"] > 0
        assert batch["result"] == t.probe(1)


@pytest.mark.root
@pytest.mark.parametrize("mode", ["spin", "paced"])
def test_floor_stops_every_thread_and_leaves_them_running(bins: dict[str, Path],
                                                          mode: str) -> None:
    """floor seizes workers + main, measures, detaches; the target runs on afterwards."""
    if os.geteuid() != 0:
        pytest.skip("ptrace of another process needs root here")
    with Target(bins["target"], mode, 4) as t:
        result = floor(bins["floor"], t.pid, rounds=10, gap_us=1000, samples=True)
        assert result["threads"] == 5
        pause = result["all"]["pause"]
        assert 0 < pause["min"] <= pause["median"] <= pause["p99"] <= pause["max"]
        assert len(result["all"]["pause_samples"]) == 10
        assert result["all"]["stop"]["median"] <= pause["median"]
        assert result["serial"]["held_per_thread"]["n"] == 50
        status = Path(f"/proc/{t.pid}/status").read_text()
        assert "TracerPid:\t0" in status, "floor left the target traced"
        before = t.calls()
        time.sleep(0.05)
        assert t.calls() > before
    assert t.proc is not None and t.proc.returncode == 0


@pytest.mark.root
def test_work_fix_applies_live(tmp_path: Path, bins: dict[str, Path], opus_cli: list[str]) -> None:
    """What bench_apply builds on: work_fix.diff as a bundle, live in a paced target."""
    bundle = tmp_path / "work_fix.opus"
    # work_fix.diff changes what work() returns on purpose: the analysis asks for review and
    # the bench accepts it explicitly.
    build = [*opus_cli, "build", "--src", str(BENCH), "--patch", str(BENCH / "work_fix.diff"),
             "--binary", str(bins["target"]), "--cflags", "-O2 -g", "--accept-review",
             "-o", str(bundle)]
    r = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with Target(bins["target"], "paced", 4) as t:
        old = t.probe(1)
        r = subprocess.run([*opus_cli, "apply", str(bundle), "--pid", str(t.pid), "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["pause_seconds"] > 0 and info["attempts"] >= 1
        assert t.probe(1) != old
        before = t.calls()
        time.sleep(0.05)
        assert t.calls() > before
    assert t.proc is not None and t.proc.returncode == 0
