"""pending's pure parts: which patches touch code, CVE ids, the table, and apply checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from opus_bpf.distro.pending import (
    PatchVerdict,
    SourceUpdate,
    _cves,
    _touches_code,
    _why_not_applying,
    table,
)


def _diff(path: str, old: str, new: str) -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_touches_code_and_cves(tmp_path: Path) -> None:
    p = tmp_path / "CVE-2026-1111.patch"
    p.write_text("Subject: fix CVE-2026-2222 too\n" + _diff("tests/x.tcl", "a", "b"))
    assert not _touches_code(p)
    assert _cves(p) == ["CVE-2026-1111", "CVE-2026-2222"]
    p.write_text(_diff("src/a.c", "a", "b"))
    assert _touches_code(p)


def test_table() -> None:
    u = SourceUpdate("redis", "5:7.0.15-1~deb12u7", "5:7.0.15-1~deb12u10", ["redis-tools"],
                     {"/usr/bin/redis-check-rdb": [42]})
    u.patches = [PatchVerdict("CVE-1.patch", "new", "safe", functions=["f"]),
                 PatchVerdict("CVE-2.patch", "new", "unsupported", reason="type changed")]
    text = table([u])
    assert "redis 5:7.0.15-1~deb12u7 -> 5:7.0.15-1~deb12u10" in text
    assert "CVE-1.patch  live-applicable [f]" in text
    assert "needs a restart: type changed" in text
    assert table([]).startswith("no pending updates")
    assert u.to_dict()["patches"][0]["meaning"] == "live-applicable"


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs GNU patch")
def test_why_not_applying(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.c").write_text("one\n")
    first = tmp_path / "first.patch"
    first.write_text(_diff("a.c", "one", "two"))
    second = tmp_path / "second.patch"
    second.write_text(_diff("a.c", "two", "three"))
    assert "applies only on top of first.patch" in _why_not_applying(tree, second, [first])
    subprocess.run(["patch", "-p1", "-s", "-i", str(first)], cwd=tree, check=True)
    assert "already applied" in _why_not_applying(tree, first, [])
    other = tmp_path / "other.patch"
    other.write_text(_diff("a.c", "zzz", "yyy"))
    assert "context" in _why_not_applying(tree, other, [first])
