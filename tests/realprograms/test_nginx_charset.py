"""nginx from Debian 12's source package: CVE-2026-42934 changes a function gcc inlined into
its only caller; the bundle replaces that caller, taken out of the quilt series with --pick,
applied with `apply --exe` to master + 2 workers under wrk (see nginx_charset_case.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nginx_charset_case import run_case
from redis_case import Unavailable
from test_redis import _need

pytestmark = pytest.mark.root


@pytest.mark.slow
def test_nginx_cve_2026_42934_inlined(tmp_path: Path) -> None:
    _need()
    try:
        fig = run_case(tmp_path)
    except Unavailable as e:
        pytest.skip(f"the nginx source package cannot be downloaded here: {e}")
    # ngx_http_charset_recode_from_utf8 has no symbol: its holder is replaced
    assert fig.functions_replaced == ["ngx_http_charset_body_filter"]
    assert "ngx_http_charset_recode_from_utf8" in fig.functions_added
    assert len(fig.apply) == 3 and all(p["ok"] for p in fig.apply + fig.revert)
    assert fig.trigger_before == "61 88 00 62 0a"  # a stray NUL: bytes read past the buffer
    assert fig.trigger_patched == "61 88 62 0a"  # every worker converts the split euro sign
    assert fig.trigger_reverted == fig.trigger_before
    assert fig.wrk_requests > 0 and fig.failed_requests == 0
