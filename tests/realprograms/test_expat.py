"""libexpat from Debian 12's source package, built as debian/rules does: CVE-2024-45490 fixed
with `apply --lib` in every process of a prefork XML service mapping the library, under load,
and reverted (see expat_case.py). The fast form builds the library once, under the capture; the
slow form takes the fix out of the Debian quilt series with `--patch series --pick`."""

from __future__ import annotations

from pathlib import Path

import pytest
from expat_case import Figures, run_case
from redis_case import Unavailable
from test_redis import _need

pytestmark = pytest.mark.root


def _case(tmp_path: Path, **kw) -> Figures:
    _need()
    try:
        return run_case(tmp_path, **kw)
    except Unavailable as e:
        pytest.skip(f"the expat source package cannot be downloaded here: {e}")


def _check(fig: Figures) -> None:
    assert fig.functions_replaced == ["XML_ParseBuffer"]
    assert fig.verdict == "review"  # a new value stored into parser->m_errorCode: the fix
    assert fig.processes == 3 and all(p["ok"] for p in fig.apply + fig.revert)
    # the negative chunk length is taken, then refused by every worker, then taken again
    assert fig.trigger_before == "OK 0 0"
    assert fig.trigger_patched == "ERR 41 invalid argument"
    assert fig.trigger_reverted == fig.trigger_before
    # xmlload: every valid document parsed, no connection lost, through apply and revert
    assert fig.documents > 0 and fig.failed_requests == 0 and fig.load_rc == 0


def test_expat_cve_2024_45490_lib_fast(tmp_path: Path) -> None:
    _check(_case(tmp_path, fast=True))


@pytest.mark.slow
def test_expat_cve_2024_45490_lib_series(tmp_path: Path) -> None:
    fig = _case(tmp_path, fast=False)
    _check(fig)
    assert fig.capture_seconds > 0  # opus-bpf build ran the library's build once more
