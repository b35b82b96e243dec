"""nginx from Debian 12's source package, configure+make, master + 2 workers: CVE-2026-42945
fixed in every process with `apply --exe` under wrk, and reverted (see nginx_case.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nginx_case import run_case
from redis_case import Unavailable
from test_redis import _need

pytestmark = pytest.mark.root


@pytest.mark.slow
def test_nginx_cve_2026_42945_all_processes(tmp_path: Path) -> None:
    _need()
    try:
        fig = run_case(tmp_path, fast=False)
    except Unavailable as e:
        pytest.skip(f"the nginx source package cannot be downloaded here: {e}")
    assert fig.functions_replaced == ["ngx_http_script_regex_end_code"]
    assert fig.verdict == "review"  # the fix writes e->is_args: accepted with --accept-review
    assert fig.processes == 3 and all(p["ok"] for p in fig.apply + fig.revert)
    assert fig.trigger_before == "/a%20b"  # $1 escaped after the rewrite, and truncated
    assert fig.trigger_patched == "/a b?c"  # every worker answers with the fixed code
    assert fig.trigger_reverted == fig.trigger_before
    assert fig.wrk_requests > 0 and fig.failed_requests == 0
