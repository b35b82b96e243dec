"""The bundled demo (examples/demo) end to end, on real processes.

test_demo_live is the newcomer's path (`scripts/dev.sh demo`): it skips only while the opus-bpf
CLI has no build/apply/status commands, and then really runs them against the running server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"


def run_demo(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, dict, str]:
    """Run run_demo.py; return (exit status, its summary JSON, its combined output)."""
    summary = tmp_path / "summary.json"
    r = subprocess.run([sys.executable, str(DEMO / "run_demo.py"), "--summary-json", str(summary),
                        *args], capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert summary.exists(), f"run_demo.py wrote no summary:\n{out}"
    return r.returncode, json.loads(summary.read_text()), out


@pytest.mark.parametrize("prog", ["server.c", "loadgen.c"])
def test_c_sources_compile_warning_free(tmp_path: Path, prog: str) -> None:
    """The demo programs build with -O2 -g -Wall -Wextra -Werror."""
    r = subprocess.run(["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", prog,
                        "-o", str(tmp_path / "a.out")], cwd=DEMO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_parser_is_a_real_function(tmp_path: Path) -> None:
    """handle_request stays an out-of-line, called function at -O2 (what the patch replaces)."""
    binary = tmp_path / "server"
    subprocess.run(["gcc", "-O2", "-g", "-pthread", "server.c", "-o", str(binary)], cwd=DEMO,
                   check=True)
    disasm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(binary)],
                            capture_output=True, text=True, check=True).stdout
    assert "<handle_request>:" in disasm
    calls = [ln for ln in disasm.splitlines() if "call" in ln and ln.endswith("<handle_request>")]
    assert calls, "nothing calls handle_request: gcc inlined it"
    assert "handle_request." not in disasm, "gcc cloned the parser (isra/constprop/part)"


def test_fix_diff_offline(tmp_path: Path) -> None:
    """Bug shown on the original build, gone on the build with fix.diff, no failed requests."""
    rc, summary, out = run_demo(tmp_path, "--offline")
    assert rc == 0, out
    assert summary["bug_before"], out
    assert summary["before"]["key"].startswith("KEY "), out
    assert summary["fixed_after"] and summary["valid_after"], out
    assert summary["after"] == {"set": "ERR length", "key": "ERR denied"}, out
    assert summary["load"]["failed"] == 0, out


@pytest.mark.root
def test_demo_live(tmp_path: Path, opus_cli: list[str]) -> None:
    """The demo proper: opus-bpf fixes the running server under load, 0 failed requests."""
    rc, summary, out = run_demo(tmp_path, "--opus-bpf", " ".join(opus_cli))
    assert summary["bug_before"], out
    assert summary["fixed_after"], out
    assert summary["valid_after"], out
    assert summary["server_alive_after"], out
    assert summary["served_after"] > summary["served_before"], out
    assert summary["load"].get("failed") == 0, out
    assert summary["load"].get("ok", 0) > 0, out
    for key in ("pid", "functions", "wait_seconds", "pause_seconds", "attempts"):
        assert key in summary["apply"], f"apply --json has no {key!r}: {summary['apply']}"
    assert "handle_request" in json.dumps(summary["apply"]["functions"]), summary["apply"]
    assert rc == 0, out
