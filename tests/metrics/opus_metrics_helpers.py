"""Helpers for the metrics tests: free ports, HTTP, bundles, an agent subprocess."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TARGET_C = r"""
#include <stdio.h>
#include <unistd.h>
int work(int x) { return x * 2; }
int main(void) { volatile int s = 0; for (;;) { s += work(1); usleep(100000); } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_post_json(url: str, obj: object) -> dict:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def read_build_id(path: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from opus_bpf.agent.buildid import read_build_id as rb

    bid = rb(str(path))
    assert bid, f"{path} has no build-id"
    return bid


def write_bundle(path: Path, name: str, build_id: str, functions: list[str]) -> str:
    """A real, verifiable bundle whose patch.so is a placeholder (for the fake applier only).

    Returns the bundle id (content hash, computed by the bundle module).
    """
    sys.path.insert(0, str(ROOT))
    from opus_bpf import bundle as b

    m = b.Manifest(
        name=name, target=b.Target(path="/unused", build_id=build_id, elf_type="DYN"),
        patch_object=b.PatchObject("", 0),
        functions=[b.ReplacedFunction(f, "t.c", False, f) for f in functions],
    )
    return b.write_bundle(path, m, b"placeholder for " + name.encode()).id


class AgentProc:
    """`python -m opus_bpf.agent` in a subprocess, with its URL and log."""

    def __init__(self, tmp: Path, extra_args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.patch_dir = tmp / "patches"
        self.state_dir = tmp / "state"
        self.patch_dir.mkdir(exist_ok=True)
        self.log_path = tmp / "agent.log"
        self.extra_args = extra_args
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opus_bpf.agent", "--listen", f"127.0.0.1:{self.port}",
             "--patch-dir", str(self.patch_dir), "--state-dir", str(self.state_dir),
             *self.extra_args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.alive_or_fail() and http_get(self.url + "/healthz"), 120,
                 "the agent's /healthz")

    def alive_or_fail(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.logtext()}")
        return True

    def logtext(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        return json.loads(http_get(self.url + "/status"))

    def wait_exec_watch(self, timeout: float) -> dict:
        """Status once BCC has loaded the exec watch or given up (it compiles in the background:
        about a second on a quiet host, tens of seconds on a loaded one)."""

        def settled() -> dict | None:
            st = self.status()
            return st if st["exec_watch"] or st["exec_watch_error"] else None

        return wait_for(settled, timeout, "the exec watch to load", interval=0.5)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode




# ---- Prometheus -----------------------------------------------------------------------------

DASHBOARD = ROOT / "dashboards" / "opus-bpf.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
JOB = "opus-bpf"


def install_prometheus() -> str | None:
    """Find prometheus, installing Debian's package if we are root and it is missing."""
    return install_debian("prometheus", "prometheus")


def install_debian(package: str, exe_name: str) -> str | None:
    """Find `exe_name`, installing Debian's `package` if we are root and it is missing."""
    exe = shutil.which(exe_name)
    if exe:
        return exe
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    for cmd in (install, ["apt-get", "update", "-qq"], install):
        subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
        if shutil.which(exe_name):
            break
    return shutil.which(exe_name)


class Prom:
    """A Prometheus server started for one test module, and its HTTP API."""

    def __init__(self, exe: str, tmp: Path, targets: list[str], job: str = JOB,
                 honor_labels: bool = False) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            # 2 s, not 1 s: the scrape timeout cannot exceed the interval, and a loaded host
            # can take over a second to answer
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n"
            f"rule_files:\n  - {ALERTS}\n"
            f"scrape_configs:\n  - job_name: {job}\n"
            f"    honor_labels: {'true' if honor_labels else 'false'}\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        self.log_path = tmp / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._alive() and http_get(self.url + "/-/ready"), 120,
                 "prometheus /-/ready")

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log_path.read_text())
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()

    def api(self, path: str, **params: str) -> dict:
        q = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{q}", timeout=10))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr, time=f"{time.time():.3f}")
        assert data["resultType"] in ("vector", "scalar"), (expr, data)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_scraped(self, timeout: float = 120) -> None:
        """Until the job has been scraped successfully (before generating events, so that the
        events show up as increases over a baseline)."""
        wait_for(lambda: self.query(f'up{{job="{JOB}"}} == 1'), timeout, "a first scrape",
                 interval=0.5)

    def value(self, expr: str) -> float:
        """The single value of `expr` (sum it in the expression if needed); NaN if empty."""
        res = self.query(expr)
        return float(res[0]["value"][1]) if res else math.nan


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title or variable, expression) for every query in the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q))
    return out


def substitute(expr: str) -> str:
    """Do what Grafana does with the variables: All for job/instance, fixed intervals."""
    return (expr.replace("$__rate_interval", "30s").replace("$__range", "5m")
            .replace("$job", ".+").replace("$instance", ".+"))


def label_values(prom: Prom, expr: str) -> list[str]:
    """label_values(series, label): Grafana runs it as a series lookup, not PromQL."""
    inner = expr[len("label_values("):-1]
    series, _, label = inner.rpartition(",")
    data = prom.api("series", **{"match[]": series.strip(),
                                 "start": f"{time.time() - 300:.0f}"})
    return sorted({s[label.strip()] for s in data if label.strip() in s})


def queries_without_data(prom: Prom) -> list[tuple]:
    """Dashboard queries that return nothing (or only NaN) right now."""
    empty: list[tuple] = []
    for title, expr in dashboard_queries():
        if expr.startswith("label_values("):
            if not label_values(prom, substitute(expr)):
                empty.append((title, expr))
            continue
        res = prom.query(substitute(expr))
        values = [float(r["value"][1]) for r in res]
        if not values or all(math.isnan(v) for v in values):
            empty.append((title, expr, res))
    return empty
