"""Every dashboard query and every alert rule, evaluated by a real Prometheus scraping a real agent.

The agent runs as `python -m opus_bpf.agent` with two test-only switches (docs/observability.md,
"Testing"): OPUS_BPF_AGENT_FAKE_APPLY=applied makes its applies to a real running C program
succeed without touching it, and OPUS_BPF_AGENT_TEST_HOOKS=1 opens POST /-/test/metrics, through
which the test records timeouts, refusals, reverts, long pauses, verification failures and call
counts inside the agent process: outcomes a healthy run with the real runtime does not produce.
test_live_e2e.py does the same with the real runtime patching real processes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from opus_metrics_helpers import (
    ALERTS,
    DASHBOARD,
    JOB,
    AgentProc,
    Prom,
    dashboard_queries,
    http_post_json,
    queries_without_data,
    read_build_id,
    wait_for,
    write_bundle,
)

# Rules the generated samples must make fire (the others are checked for data on their signal).
EXPECTED_FIRING = {
    "OpusBpfApplyFailed", "OpusBpfApplyRefused", "OpusBpfPauseP99High",
    "OpusBpfPauseP99Critical", "OpusBpfBundleVerificationFailed", "OpusBpfExecWatchDown",
}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool missing (it comes with Debian's prometheus package)")
    return exe


def test_promtool_check_rules(prometheus_bin: str) -> None:
    r = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


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
    prom = None
    try:
        agent.start()
        prom = Prom(prometheus_bin, tmp, [f"127.0.0.1:{agent.port}"])
        # a baseline scrape of the zero-initialised series, then the events
        prom.wait_scraped()
        wait_for(lambda: agent.status()["processes"], 120, "the agent to patch the target")
        prom.wait_scraped()  # a baseline scrape with the zero-initialised series
        _generate_samples(agent)
        # the last event (42 calls) seen by at least two scrapes: every earlier one is in too
        wait_for(lambda: prom.value("count_over_time(opus_bpf_patched_function_calls_total"
                                    "[5m])") >= 2, 120, "two scrapes after the events",
                 interval=0.5)
        yield prom, agent
    finally:
        if prom is not None:
            prom.stop()
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


def test_dashboard_uses_conventions() -> None:
    dash = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p.get("description"), f"panel {p['title']!r} says nothing about itself"
    for title, expr in dashboard_queries():
        if "rate(" in expr or "increase(" in expr:
            assert "[$__rate_interval]" in expr or "[$__range]" in expr, (title, expr)
        if not title.startswith("variable"):
            assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, (title, expr)


def test_every_dashboard_query_returns_data(stack: tuple[Prom, AgentProc]) -> None:
    prom, _ = stack
    assert len(dashboard_queries()) >= 25
    empty = queries_without_data(prom)
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

    rules = wait_for(healthy, 60, "every rule evaluated once")
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
