"""The real rebuild path: Debian's installed redis-server and libevent fixed live from their
security updates' debian/patches (slow: apt-get source, dpkg-buildpackage, load generators)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    # a cold run rebuilds the package and analyses every waiting patch: many minutes
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (apt, ptrace, BPF)"),
    pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None, reason="needs dpkg-dev"),
]


def _skip_unavailable(exc: Exception) -> None:
    pytest.skip(f"not available here: {exc}")


def test_installed_redis_fixed_live_under_benchmark() -> None:
    import redis_installed_case as case

    try:
        fig = case.run_case(Path(tempfile.mkdtemp(prefix="opus-distro-")), requests=500_000)
    except case.Unavailable as exc:
        _skip_unavailable(exc)
    assert fig["installed"]["build_id_match"] or fig["installed"]["loaded_sections_identical"]
    verdicts = {p["name"]: p["verdict"] for p in fig["pending"]}
    assert verdicts[case.FIX] == "safe"
    assert fig["trigger_unpatched"]["accepted"] is True
    assert fig["trigger_patched"]["restore_reply"].startswith("-ERR Bad data format")
    assert fig["trigger_reverted"]["accepted"] is True
    assert fig["benchmark_exit"] == 0 and fig["server_alive"]


def test_installed_libevent_fixed_live_in_three_processes() -> None:
    import libevent_installed_case as case

    if shutil.which("wrk") is None:
        pytest.skip("needs wrk")
    try:
        fig = case.run_case(Path(tempfile.mkdtemp(prefix="opus-libevent-")), seconds=20)
    except case.Unavailable as exc:
        _skip_unavailable(exc)
    assert fig["installed"]["loaded_sections_identical"]
    assert fig["trigger_unpatched"]["reply"] == "echo-header: accepted"
    assert all(t["reply"] == "echo-header: rejected" for t in fig["trigger_patched"])
    assert fig["trigger_reverted"]["reply"] == "echo-header: accepted"
    assert all(w["socket_errors"] == 0 and w["non_2xx"] == 0 and w["requests"] > 0
               for w in fig["wrk"])
    assert fig["servers_alive"]
