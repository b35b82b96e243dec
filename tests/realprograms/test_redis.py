"""redis from Debian 12's source package: CVE-2025-21605 fixed live under redis-benchmark and
reverted (see redis_case.py). The fast form builds redis once, under the compile-command
capture; the slow form builds it as debian/rules does and then lets `opus-bpf build --build`
capture the commands from a second run of that build."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from redis_case import Figures, Unavailable, run_case

pytestmark = pytest.mark.root


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (ptrace + BPF, apt-get)")
    for tool in ("apt-get", "dpkg-buildflags", "make", "patch", "gcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def _case(tmp_path: Path, **kw) -> Figures:
    _need()
    try:
        return run_case(tmp_path, **kw)
    except Unavailable as e:
        pytest.skip(f"the redis source package cannot be downloaded here: {e}")


def _check(fig: Figures) -> None:
    assert fig.functions_replaced == ["checkClientOutputBufferLimits"]
    assert fig.verdict == "safe"
    # the bug: 20,000 unread -NOAUTH replies buffered by the server for an unauthenticated client
    assert fig.trigger_before == {"commands": 20_000, "noauth_replies": 20_000,
                                  "closed_by_server": False}
    # fixed live: the server drops that client once its output passes 1 kB
    assert fig.trigger_patched["closed_by_server"] is True
    assert fig.trigger_patched["noauth_replies"] < 20_000
    # reverted: the old behaviour again
    assert fig.trigger_reverted == fig.trigger_before
    # redis-benchmark exits 1 on any error reply or lost connection
    assert fig.benchmark_rc == 0 and fig.failed_requests == 0
    assert fig.apply_attempts >= 1 and fig.apply_pause_us > 0


def test_redis_cve_2025_21605_fast(tmp_path: Path) -> None:
    _check(_case(tmp_path, fast=True, requests=600_000, benchmark="set"))


@pytest.mark.slow
def test_redis_cve_2025_21605_debian_build(tmp_path: Path) -> None:
    fig = _case(tmp_path, fast=False, requests=1_000_000)
    _check(fig)
    assert fig.capture_seconds > 0  # opus-bpf build ran the program's own build once more
