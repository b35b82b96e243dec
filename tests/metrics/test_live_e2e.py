"""The real thing: the agent patches real processes with the real runtime, Prometheus scrapes it.

A small service (data/ticker) runs; its bundle is built with `opus-bpf build`; the agent applies
it to the running copy at start-up, and to a second copy started later through its BPF exec watch
(scans are 10 minutes apart, so only the exec event can do it), counting calls into the new code
with --count-calls. Every dashboard query must then return data from these real samples.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opus_metrics_helpers import (
    JOB,
    ROOT,
    AgentProc,
    Prom,
    http_get,
    queries_without_data,
    wait_for,
)

DATA = Path(__file__).parent / "data" / "ticker"
CFLAGS = "-O2 -g"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="patching processes needs root (ptrace, BPF)"),
]


class Ticker:
    """A running copy of the ticker with its output lines collected."""

    def __init__(self, exe: Path) -> None:
        self.p = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = self.p.pid
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for ln in self.p.stdout:
            self.lines.append(ln.strip())

    def last_price(self) -> int | None:
        for ln in reversed(self.lines):
            if ln.startswith("price="):
                return int(ln.split()[0].split("=")[1])
        return None

    def stop(self) -> None:
        self.p.kill()
        self.p.wait()


@pytest.fixture(scope="module")
def live(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Prom, AgentProc, Path, list[Ticker]]]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    tmp = tmp_path_factory.mktemp("live")
    src = tmp / "src"
    shutil.copytree(DATA, src)
    exe = src / "ticker"
    subprocess.run(["gcc", *CFLAGS.split(), "-o", str(exe), str(src / "ticker.c")], check=True)
    agent = AgentProc(tmp, ["--rescan-interval", "600", "--exec-delay", "0.1", "--count-calls"],
                      {"OPUS_BPF_STATE_DIR": str(tmp / "state")})
    build = subprocess.run(
        [sys.executable, "-m", "opus_bpf.cli", "build", "--src", str(src), "--patch",
         str(DATA / "fix.diff"), "--binary", str(exe), "--cflags", CFLAGS,
         # the fix changes the value price() returns, which OPUS rightly asks to review; the
         # caller here only prints it
         "--accept-review",
         "-o", str(agent.patch_dir / "010-price.opus")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    tickers = [Ticker(exe)]
    prom = None
    try:
        wait_for(lambda: tickers[0].last_price() == 10, 30, "the ticker to run unpatched")
        agent.start()
        prom = Prom(prometheus_bin, tmp, [f"127.0.0.1:{agent.port}"])
        # scraped before the second process starts, so its apply shows up as an increase
        prom.wait_scraped()
        yield prom, agent, exe, tickers
    finally:
        if prom is not None:
            prom.stop()
        agent.stop()
        for t in tickers:
            t.stop()


def test_running_and_restarted_processes_get_patched(live: tuple) -> None:
    prom, agent, exe, tickers = live
    wait_for(lambda: tickers[0].last_price() == 7, 120, "the running ticker to be patched")
    # BCC compiles the watch in the background: long on a loaded host
    st = agent.wait_exec_watch(240)
    assert st["exec_watch"], "exec watch did not load:\n" + agent.logtext()
    t0 = time.monotonic()
    tickers.append(Ticker(exe))
    wait_for(lambda: tickers[1].last_price() == 7, 120, "the new ticker to be patched via exec")
    took = time.monotonic() - t0
    print(f"exec to patched code running: {took:.2f} s")
    want = sorted(t.pid for t in tickers)
    # the new code runs before apply_bundle returns; the record follows right after
    wait_for(lambda: sorted(p["pid"] for p in agent.status()["processes"]) == want, 60,
             "the agent's record of both processes")


def test_prometheus_sees_real_samples(live: tuple) -> None:
    prom, agent, _exe, tickers = live
    wait_for(lambda: len(agent.status()["processes"]) == 2, 120, "both tickers patched")
    sel = f'job="{JOB}"'
    wait_for(lambda: prom.value(f'sum(opus_bpf_operations_total{{{sel}, outcome="applied"}})')
             >= 2, 120, "two applies in Prometheus")
    wait_for(lambda: prom.value(f"sum(opus_bpf_patched_processes{{{sel}}})") == 2, 60,
             "two patched processes in Prometheus")
    assert prom.value(f"opus_bpf_replaced_functions{{{sel}}}") == 2
    p99 = prom.value("histogram_quantile(0.99, sum by (le) "
                     f"(rate(opus_bpf_pause_seconds_bucket{{{sel}}}[1m])))")
    assert 0 < p99 < 10, (p99, prom.query(f"opus_bpf_pause_seconds_bucket{{{sel}}}"),
                          agent.logtext())
    # price() runs about 100 times a second per ticker (less on a loaded host)
    wait_for(lambda: prom.value(f"sum(rate(opus_bpf_patched_function_calls_total{{{sel}}}"
                                f"[30s]))") > 1, 60, "calls into the new code counted by BPF")
    assert prom.value(f'opus_bpf_agent_processes_examined_total{{{sel}, source="exec"}}') >= 1
    empty = queries_without_data(prom)
    assert not empty, "dashboard queries without data:\n" + "\n".join(map(str, empty))


def test_exited_process_leaves_the_gauges(live: tuple) -> None:
    prom, agent, _exe, tickers = live
    wait_for(lambda: len(agent.status()["processes"]) == 2, 120, "both tickers patched")
    tickers[-1].stop()
    tickers.pop()
    wait_for(lambda: b'opus_bpf_replaced_functions 1.0' in http_get(agent.url + "/metrics"),
             60, "the gauge to drop to one process")
    wait_for(lambda: prom.value("sum(opus_bpf_patched_processes)") == 1, 60,
             "Prometheus to see one patched process")


def test_manual_revert_is_respected(live: tuple) -> None:
    """An operator's `opus-bpf revert` wins: the agent forgets the patch and does not re-apply."""
    prom, agent, _exe, tickers = live
    first = tickers[0]
    wait_for(lambda: first.pid in [p["pid"] for p in agent.status()["processes"]], 120,
             "the first ticker patched")
    bundle = next(agent.patch_dir.glob("*.opus"))
    r = subprocess.run([sys.executable, "-m", "opus_bpf.cli", "revert", str(bundle), "--pid",
                        str(first.pid)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "OPUS_BPF_STATE_DIR": str(agent.state_dir)})
    assert r.returncode == 0, r.stderr
    wait_for(lambda: first.last_price() == 10, 30, "the old code back after the revert")
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)  # rescan now
    wait_for(lambda: first.pid not in [p["pid"] for p in agent.status()["processes"]], 60,
             "the agent to forget the reverted patch")
    time.sleep(2)
    assert first.last_price() == 10, "the agent re-applied a patch the operator reverted"
