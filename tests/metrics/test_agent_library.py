"""The agent routes a shared-library bundle to every process that maps the library,
including processes started after it, by the library's build-id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opus_metrics_helpers import ROOT, AgentProc, wait_for

SHAREDLIB = ROOT / "tests" / "runtime" / "targets" / "sharedlib"


class Prog:
    """A program linked to libcalc.so; remembers the last `calc=` it printed."""

    def __init__(self, exe: Path) -> None:
        self.p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True, bufsize=1)
        self.last: str | None = None
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for ln in self.p.stdout:
            if ln.startswith("calc="):
                self.last = ln.split()[0]

    def stop(self) -> None:
        self.p.kill()
        self.p.wait(5)


def test_library_bundle_reaches_running_and_new_processes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (ptrace + BPF)")
    src = tmp_path / "src"
    shutil.copytree(SHAREDLIB, src)
    lib = src / "libcalc.so"
    subprocess.run(["gcc", "-O2", "-g", "-fPIC", "-shared", "-o", str(lib), str(src / "calc.c")],
                   check=True)
    exe = src / "prog"
    subprocess.run(["gcc", "-O2", "-g", "-x", "c", "-o", str(exe), str(src / "prog.txt"),
                    f"-L{src}", "-lcalc", f"-Wl,-rpath,{src}"], check=True)
    agent = AgentProc(tmp_path, ["--rescan-interval", "600", "--exec-delay", "0.1"],
                      {"OPUS_BPF_STATE_DIR": str(tmp_path / "state")})
    build = subprocess.run(
        [sys.executable, "-m", "opus_bpf.cli", "build", "--src", str(src), "--patch",
         str(src / "fix.diff"), "--binary", str(lib), "--cflags", "-O2 -g -fPIC",
         "--accept-review", "-o", str(agent.patch_dir / "010-calc.opus")],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    progs = [Prog(exe)]
    try:
        wait_for(lambda: progs[0].last == "calc=1", 30, "the program to run unpatched")
        agent.start()
        wait_for(lambda: progs[0].last == "calc=5", 120, "the running process to be patched")
        agent.wait_exec_watch(120)
        progs.append(Prog(exe))  # started later: patched through the exec watch
        wait_for(lambda: progs[1].last == "calc=5", 120, "the new process to be patched")
        st = agent.status()
        assert st["bundles"][0]["build_id"]
    finally:
        agent.stop()
        for p in progs:
            p.stop()
