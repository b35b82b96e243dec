"""One-shot runs: metrics pushed to a real Pushgateway reach Prometheus with job and instance kept.

What `opus-bpf apply --pushgateway` does (metrics.run_observed, then metrics.publish) runs here
in a short-lived subprocess, like a CLI run; Debian's prometheus-pushgateway receives it and a
real Prometheus scrapes the gateway with `honor_labels: true`, as docs/observability.md says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opus_metrics_helpers import (
    JOB,
    ROOT,
    Prom,
    free_port,
    http_get,
    install_debian,
    label_values,
    wait_for,
)

ONE_SHOT = """
import socket, sys
from types import SimpleNamespace
from opus_bpf import metrics
res = SimpleNamespace(operation="apply", outcome="applied", functions=[1, 2], wait_seconds=0.002,
                      pause_seconds=80e-6, pauses=[80e-6], attempts=1, probe_hits=12,
                      bundle_id="b")
metrics.run_observed("apply", lambda: res)
problems = metrics.publish(pushgateway=sys.argv[1])
print(socket.gethostname() if not problems else problems)
sys.exit(1 if problems else 0)
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = install_debian("prometheus-pushgateway", "prometheus-pushgateway")
    if exe is None:
        pytest.skip("prometheus-pushgateway is not installed and could not be installed "
                    "(needs root and apt-get: apt-get install prometheus-pushgateway)")
    tmp = tmp_path_factory.mktemp("pgw")
    port = free_port()
    log = open(tmp / "pushgateway.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}",
                          f"--persistence.file={tmp / 'pgw.data'}"],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"127.0.0.1:{port}"
        wait_for(lambda: p.poll() is None and http_get(f"http://{url}/-/ready"), 60,
                 "pushgateway /-/ready")
        yield url
    finally:
        p.terminate()
        p.wait(10)
        log.close()


def test_one_shot_run_reaches_prometheus(gateway: str, prometheus_bin: str,
                                         tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", ONE_SHOT, gateway], capture_output=True,
                       text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    host = r.stdout.strip()
    body = http_get(f"http://{gateway}/metrics").decode()
    assert f'opus_bpf_operations_total{{instance="{host}",job="{JOB}"' in body
    prom = Prom(prometheus_bin, tmp_path, [gateway], job="pushgateway", honor_labels=True)
    try:
        q = (f'opus_bpf_operations_total{{job="{JOB}", instance="{host}", operation="apply", '
             'outcome="applied"}')
        assert wait_for(lambda: prom.value(q) == 1, 60, "the pushed sample in Prometheus")
        # the dashboard's job variable finds the pushed job like an agent's
        assert JOB in label_values(prom, "label_values(opus_bpf_build_info, job)")
    finally:
        prom.stop()
