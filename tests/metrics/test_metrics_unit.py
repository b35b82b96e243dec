"""The metrics module on its own: names, units, bounded labels, no _created series."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opus_bpf import metrics


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(name: str, **labels: str) -> float:
    return _samples().get((name, tuple(sorted(labels.items()))), 0.0)


def test_names_follow_conventions() -> None:
    text = metrics.exposition().decode()
    assert "_created" not in text
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("opus_bpf_"), fam.name
        if fam.type == "counter" and fam.samples:
            assert any(s.name.endswith("_total") for s in fam.samples), fam.name
        if fam.type == "histogram" and "attempts" not in fam.name:
            assert fam.name.endswith("_seconds"), fam.name
        for s in fam.samples:
            assert "pid" not in s.labels, s


def test_buckets_resolve_tens_of_microseconds() -> None:
    assert metrics.DURATION_BUCKETS[0] == pytest.approx(10e-6)
    assert metrics.DURATION_BUCKETS[-1] == pytest.approx(10.0)
    assert list(metrics.DURATION_BUCKETS) == sorted(metrics.DURATION_BUCKETS)


def test_observe_apply_records_every_family() -> None:
    before_ok = _value("opus_bpf_operations_total", operation="apply", outcome="applied")
    before_pauses = _value("opus_bpf_pause_seconds_count", operation="apply")
    before_fn = _value("opus_bpf_functions_replaced_total", operation="apply")
    before_ovh = _value("opus_bpf_probe_overhead_seconds_total", operation="apply")
    metrics.observe_apply("applied", 0.0021, [40e-6, 70e-6], attempts=2, probe_hits=1000,
                          functions=3, patch_id="p1", successful_pause_seconds=70e-6)
    assert _value("opus_bpf_operations_total", operation="apply", outcome="applied") \
        == before_ok + 1
    assert _value("opus_bpf_pause_seconds_count", operation="apply") == before_pauses + 2
    assert _value("opus_bpf_functions_replaced_total", operation="apply") == before_fn + 3
    # 1000 hits = 500 entries x 0.3 us + 500 returns x 0.5 us
    assert _value("opus_bpf_probe_overhead_seconds_total", operation="apply") \
        == pytest.approx(before_ovh + 400e-6)
    metrics.observe_apply("applied", 0.0, [], 1, 1000, 1, "p1", probe_entries=900,
                          probe_returns=100)
    assert _value("opus_bpf_probe_overhead_seconds_total", operation="apply") \
        == pytest.approx(before_ovh + 400e-6 + 900 * 0.3e-6 + 100 * 0.5e-6)
    # a 40 us pause lands in the 50 us bucket, not in the 25 us one
    le50 = _value("opus_bpf_pause_seconds_bucket", operation="apply", le="5e-05")
    le25 = _value("opus_bpf_pause_seconds_bucket", operation="apply", le="2.5e-05")
    assert le50 - le25 >= 1


def test_unknown_values_stay_bounded() -> None:
    before = _value("opus_bpf_operations_total", operation="revert", outcome="error")
    metrics.observe_apply("exploded-in-new-way", 0.1, [], 0, 0, 0, "p", operation="revert")
    assert _value("opus_bpf_operations_total", operation="revert", outcome="error") == before + 1
    metrics.bundle_verification_failed("cosmic ray")
    assert _value("opus_bpf_bundle_verification_failures_total", reason="other") >= 1
    with pytest.raises(ValueError):
        metrics.observe_apply("applied", 0, [], 1, 0, 1, "p", operation="frobnicate")


def test_observe_result_duck_typed() -> None:
    before = _value("opus_bpf_operations_total", operation="revert", outcome="reverted")
    fn = SimpleNamespace(name="f", old_address=1, new_address=2)
    res = SimpleNamespace(pid=1, bundle_id="b", name="n", functions=[fn, fn], wait_seconds=0.01,
                          pause_seconds=50e-6, pauses=[30e-6, 50e-6], attempts=2, probe_hits=4,
                          outcome="reverted")
    metrics.observe_result(res, operation="revert")
    assert _value("opus_bpf_operations_total", operation="revert", outcome="reverted") \
        == before + 1


def test_patch_state_gauges_drop_removed_patches() -> None:
    metrics.set_patch_state({"a": 2, "b": 1}, {"a": 3, "b": 1})
    assert _value("opus_bpf_replaced_functions") == 7
    metrics.set_patch_state({"a": 1}, {"a": 3})
    s = _samples()
    assert ("opus_bpf_patched_processes", (("patch_id", "b"),)) not in s
    assert _value("opus_bpf_replaced_functions") == 3
    metrics.set_patch_state({}, {})


def test_split_listen() -> None:
    assert metrics.split_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert metrics.split_listen("[::1]:9") == ("::1", 9)
    assert metrics.split_listen(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ValueError):
        metrics.split_listen("localhost")


def test_metrics_imports_nothing_of_ours() -> None:
    with open(metrics.__file__) as f:
        src = f.read()
    assert not re.search(r"^\s*(from|import)\s+(opus_bpf|\.)", src, re.M)


def test_push_to_gateway_puts_the_registry() -> None:
    """One-shot CLI runs push; check what a Pushgateway would receive (method, path, body)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: dict[str, object] = {}

    class H(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server naming
            got["path"] = self.path
            got["body"] = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.handle_request, daemon=True)
    t.start()
    metrics.observe_apply("applied", 0.001, [50e-6], 1, 3, 1, "p")
    metrics.push(f"127.0.0.1:{srv.server_port}", grouping_key={"instance": "host-a"})
    t.join(5)
    srv.server_close()
    assert got["path"] == "/metrics/job/opus-bpf/instance/host-a"
    assert 'opus_bpf_operations_total{operation="apply",outcome="applied"}' in got["body"]
    assert "_created" not in got["body"]


def test_run_observed_records_once_whoever_records() -> None:
    from opus_bpf import errors

    res = SimpleNamespace(operation="apply", outcome="applied", functions=[1], wait_seconds=0.0,
                          pause_seconds=1e-4, pauses=[1e-4], attempts=1, probe_hits=0,
                          bundle_id="b")
    n = metrics.operation_count("apply")
    assert metrics.run_observed("apply", lambda: res) is res
    assert metrics.operation_count("apply") == n + 1

    def runtime_that_records() -> object:
        metrics.observe_result(res)
        return res

    metrics.run_observed("apply", runtime_that_records)
    assert metrics.operation_count("apply") == n + 2  # not n + 3

    t = _value("opus_bpf_operations_total", operation="revert", outcome="timeout")

    def busy() -> None:
        exc = errors.QuiescenceTimeout("busy")
        exc.result = SimpleNamespace(wait_seconds=10.0, pauses=[0.3, 0.4], attempts=2,  # type: ignore[attr-defined]
                                     probe_hits=100, functions=[], bundle_id="b",
                                     pause_seconds=None)
        raise exc

    with pytest.raises(errors.QuiescenceTimeout):
        metrics.run_observed("revert", busy)
    assert _value("opus_bpf_operations_total", operation="revert", outcome="timeout") == t + 1

    v = _value("opus_bpf_bundle_verification_failures_total", reason="checksum")

    def tampered() -> None:
        raise errors.BundleError("x.opus: patch.so does not match the manifest's sha256")

    with pytest.raises(errors.BundleError):
        metrics.run_observed("apply", tampered)
    assert _value("opus_bpf_bundle_verification_failures_total", reason="checksum") == v + 1
    assert _value("opus_bpf_operations_total", operation="apply", outcome="refused") >= 1

    n = metrics.operation_count("apply")

    def gone() -> None:
        raise errors.NoSuchProcess("no such process: 1")

    with pytest.raises(errors.NoSuchProcess):
        metrics.run_observed("apply", gone)
    assert metrics.operation_count("apply") == n


def test_publish_never_raises(tmp_path) -> None:  # noqa: ANN001
    problems = metrics.publish(pushgateway="127.0.0.1:9", textfile=str(tmp_path / "m.prom"))
    assert len(problems) == 1 and "could not push" in problems[0]
    assert "opus_bpf_operations_total" in (tmp_path / "m.prom").read_text()
    assert metrics.publish(textfile="/nonexistent-dir/x.prom")[0].startswith("could not write")
