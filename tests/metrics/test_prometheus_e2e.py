"""Every dashboard query and every alert rule, evaluated by a real Prometheus scraping a real agent.

The agent runs as `python -m opus_bpf.agent` with two test-only switches (docs/observability.md,
"Testing"): OPUS_BPF_AGENT_FAKE_APPLY=applied makes its applies to a real running C program
succeed without touching it (recording what the runtime would), and OPUS_BPF_AGENT_TEST_HOOKS=1
opens POST /-/test/metrics, through which the test records timeouts, refusals, reverts, long
pauses, verification failures and call counts inside the agent process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from opus_metrics_helpers import (
    ROOT,
    AgentProc,
    free_port,
    http_get,
    http_post_json,
    read_build_id,
    wait_for,
    write_bundle,
)

DASHBOARD = ROOT / "dashboards" / "opus-bpf.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
JOB = "opus-bpf"
# Rules the generated samples must make fire (the others are checked for data on their signal).
EXPECTED_FIRING = {
    "OpusBpfApplyFailed", "OpusBpfApplyRefused", "OpusBpfPauseP99High",
    "OpusBpfPauseP99Critical", "OpusBpfBundleVerificationFailed", "OpusBpfExecWatchDown",
}


def _install_prometheus() -> str | None:
    """Find prometheus, installing Debian's package if we are root and it is missing."""
    exe = shutil.which("prometheus")
    if exe:
        return exe
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                ["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]):
        subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=False)
        if shutil.which("prometheus"):
            break
    return shutil.which("prometheus")


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    exe = _install_prometheus()
    if exe is None:
        pytest.skip("prometheus is not installed and could not be installed "
                    "(needs root and apt-get: apt-get install prometheus)")
    return exe


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool missing (it comes with Debian's prometheus package)")
    return exe


def test_promtool_check_rules(prometheus_bin: str) -> None:
    r = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

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


@pytest.fixture(scope="module")
def stack(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory,
          c_target: Path) -> Iterator[tuple[Prom, AgentProc]]:
    """A running C target, an agent patching it (fake runtime), Prometheus scraping the agent."""
    tmp = tmp_path_factory.mktemp("prom")
    target = subprocess.Popen([str(c_target)])
    agent = AgentProc(tmp, ["--no-exec-watch", "--rescan-interval", "1"],
                      {"OPUS_BPF_AGENT_FAKE_APPLY": "applied", "OPUS_BPF_AGENT_TEST_HOOKS": "1"})
    agent.patch_id = write_bundle(agent.patch_dir / "001-work.opus", "work-fix",
                                  read_build_id(c_target), ["work"])
    (agent.patch_dir / "002-broken.opus").write_bytes(b"not a zip")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {ALERTS}\n"
        f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{agent.port}']\n"
    )
    plog = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
    prom_proc = None
    try:
        agent.start()
        prom_proc = subprocess.Popen(
            [prometheus_bin, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=plog, stderr=subprocess.STDOUT,
        )
        prom = Prom(f"http://127.0.0.1:{port}")
        wait_for(lambda: prom_proc.poll() is None and http_get(prom.url + "/-/ready"), 30,
                 "prometheus /-/ready")
        # a baseline scrape of the zero-initialised series, then the events
        wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1'), 30, "a first scrape")
        wait_for(lambda: agent.status()["processes"], 15, "the agent to patch the target")
        time.sleep(1.5)
        _generate_samples(agent)
        time.sleep(3.5)  # at least three scrapes after the events
        yield prom, agent
    finally:
        if prom_proc is not None:
            prom_proc.terminate()
            prom_proc.wait(10)
        plog.close()
        agent.stop()
        target.kill()
        target.wait()


def _hook(agent: AgentProc, fn: str, **kwargs: object) -> None:
    r = http_post_json(agent.url + "/-/test/metrics", {"function": fn, "kwargs": kwargs})
    assert r == {"ok": True}, r


def _generate_samples(agent: AgentProc) -> None:
    """What a day of operations looks like, squeezed into a few calls."""
    _hook(agent, "observe_apply", outcome="timeout", wait_seconds=10.0,
          pause_seconds=[0.3, 0.5, 0.4], attempts=3, probe_hits=200000, functions=0,
          patch_id=agent.patch_id)
    _hook(agent, "observe_apply", outcome="refused", wait_seconds=0.0, pause_seconds=[],
          attempts=0, probe_hits=0, functions=0, patch_id=agent.patch_id)
    _hook(agent, "observe_apply", outcome="error", wait_seconds=0.01, pause_seconds=[0.2],
          attempts=1, probe_hits=10, functions=0, patch_id=agent.patch_id, operation="revert")
    _hook(agent, "observe_apply", outcome="reverted", wait_seconds=0.003,
          pause_seconds=[90e-6, 0.25], attempts=2, probe_hits=500, functions=1,
          patch_id=agent.patch_id, operation="revert", successful_pause_seconds=0.25)
    _hook(agent, "bundle_verification_failed", reason="checksum")
    _hook(agent, "count_patched_calls", patch_id=agent.patch_id, function="work", calls=42)


def _dashboard_queries() -> list[tuple[str, str]]:
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


def _substitute(expr: str) -> str:
    """Do what Grafana does with the variables: All for job/instance, fixed intervals."""
    return (expr.replace("$__rate_interval", "30s").replace("$__range", "5m")
            .replace("$job", ".+").replace("$instance", ".+"))


def _label_values(prom: Prom, expr: str) -> list[str]:
    """label_values(series, label): Grafana runs it as a series lookup, not PromQL."""
    inner = expr[len("label_values("):-1]
    series, _, label = inner.rpartition(",")
    data = prom.api("series", **{"match[]": series.strip(),
                                 "start": f"{time.time() - 300:.0f}"})
    return sorted({s[label.strip()] for s in data if label.strip() in s})


def test_dashboard_uses_conventions() -> None:
    dash = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names
    for title, expr in _dashboard_queries():
        if "rate(" in expr or "increase(" in expr:
            assert "[$__rate_interval]" in expr or "[$__range]" in expr, (title, expr)
        if not title.startswith("variable"):
            assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, (title, expr)


def test_every_dashboard_query_returns_data(stack: tuple[Prom, AgentProc]) -> None:
    prom, _ = stack
    empty = []
    queries = _dashboard_queries()
    assert len(queries) >= 25, queries
    for title, expr in queries:
        if expr.startswith("label_values("):
            vals = _label_values(prom, _substitute(expr))
            if not vals:
                empty.append((title, expr))
            continue
        res = prom.query(_substitute(expr))
        values = [float(r["value"][1]) for r in res]
        if not values or all(math.isnan(v) for v in values):
            empty.append((title, expr, res))
    assert not empty, "queries without data:\n" + "\n".join(map(str, empty))


def _rules_in_file() -> int:
    return len(re.findall(r"^\s*- (?:alert|record):", ALERTS.read_text(), re.M))


def _loaded_rules(prom: Prom) -> list[dict]:
    """The rules as Prometheus parsed them from alerts.yml (name, query)."""
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == _rules_in_file(), rules
    return rules


def _signal(expr: str) -> str:
    """The expression without its top-level threshold (`a > 0` -> `a`)."""
    depth = 0
    cut = None
    for i, ch in enumerate(expr):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and expr[i:i + 3] in (" > ", " < ", " ==", " !=", " >=", " <="):
            cut = i
    return expr[:cut] if cut is not None else expr


def test_every_alert_rule_evaluates(stack: tuple[Prom, AgentProc]) -> None:
    prom, _ = stack
    rules = _loaded_rules(prom)
    firing, no_data = set(), []
    for rule in rules:
        res = prom.query(rule["query"])
        if res:
            firing.add(rule["name"])
            continue
        if not prom.query(_signal(rule["query"])):
            no_data.append((rule["name"], _signal(rule["query"])))
    assert not no_data, f"rules whose signal has no data: {no_data}"
    assert firing >= EXPECTED_FIRING, f"expected to fire: {EXPECTED_FIRING - firing}"
    assert "OpusBpfAgentDown" not in firing


def test_prometheus_loaded_every_rule(stack: tuple[Prom, AgentProc]) -> None:
    prom, _ = stack

    def healthy() -> list:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, bad
        return rules

    rules = wait_for(healthy, 10, "every rule evaluated once")
    assert len(rules) == _rules_in_file()


def test_agent_samples_came_from_the_agent(stack: tuple[Prom, AgentProc]) -> None:
    """The applied outcome and the bad bundle were recorded by the agent itself, not the hook."""
    prom, agent = stack
    applied = prom.query(f'opus_bpf_operations_total{{job="{JOB}", outcome="applied"}}')
    assert applied and float(applied[0]["value"][1]) >= 1
    fmt = prom.query('opus_bpf_bundle_verification_failures_total{reason="format"}')
    assert fmt and float(fmt[0]["value"][1]) >= 1
    patched = prom.query(f'opus_bpf_patched_processes{{patch_id="{agent.patch_id}"}}')
    assert patched and float(patched[0]["value"][1]) == 1
    st = agent.status()
    assert [p["id"] for p in st["processes"][0]["patches"]] == [agent.patch_id]
