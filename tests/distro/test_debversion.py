"""Debian version order and the patch-set difference (pure logic, milliseconds)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from opus_bpf.distro.version import compare_versions, parse_series, patch_difference, strip_epoch

PAIRS = [
    ("5:7.0.15-1~deb12u7", "5:7.0.15-1~deb12u10", -1),  # numeric, not lexical: u7 < u10
    ("5:7.0.15-1~deb12u10", "5:7.0.15-1", -1),  # ~ sorts before the end
    ("7.0.15-1", "5:7.0.15-1~deb12u7", -1),  # epoch first
    ("1.0", "1.0", 0),
    ("1.0-1", "1.0-1+b1", -1),  # binNMU
    ("2.5.0-1+deb12u1", "2.5.0-1+deb12u5", -1),
    ("3.0.19-1~deb12u2", "3.0.22-1~deb12u2", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0a", "1.0+", -1),  # letters before non-letters
    ("1.001", "1.1", 0),  # leading zeros
    ("0:1.2", "1.2", 0),
    ("1:2.66-4+deb12u2", "1:2.66-4+deb12u3", -1),
    ("1.2-3-4", "1.2-3-5", -1),  # revision after the last hyphen
]


@pytest.mark.parametrize("a,b,expected", PAIRS)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    got = compare_versions(a, b)
    assert (got > 0) - (got < 0) == expected
    back = compare_versions(b, a)
    assert (back > 0) - (back < 0) == -expected


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
@pytest.mark.parametrize("a,b,expected", PAIRS)
def test_same_order_as_dpkg(a: str, b: str, expected: int) -> None:
    op = {-1: "lt", 0: "eq", 1: "gt"}[expected]
    assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


def test_strip_epoch() -> None:
    assert strip_epoch("5:7.0.15-1~deb12u10") == "7.0.15-1~deb12u10"
    assert strip_epoch("2.5.0-1") == "2.5.0-1"


def test_parse_series() -> None:
    text = "# comment\na.patch\n\nsub/b.patch -p1\nc.patch # trailing\n"
    assert parse_series(text) == ["a.patch", "sub/b.patch", "c.patch"]


def _tree(root: Path, patches: dict[str, str]) -> Path:
    d = root / "debian" / "patches"
    d.mkdir(parents=True)
    (d / "series").write_text("".join(f"{n}\n" for n in patches))
    for n, body in patches.items():
        (d / n).parent.mkdir(parents=True, exist_ok=True)
        (d / n).write_text(body)
    return root


def test_patch_difference(tmp_path: Path) -> None:
    old = _tree(tmp_path / "old", {"a.patch": "A", "b.patch": "B", "gone.patch": "G"})
    new = _tree(tmp_path / "new", {"a.patch": "A", "b.patch": "B2", "CVE-1.patch": "C",
                                   "debian/d.patch": "D"})
    got = [(c.name, c.status) for c in patch_difference(old, new)]
    assert got == [("b.patch", "changed"), ("CVE-1.patch", "new"), ("debian/d.patch", "new")]


def test_patch_difference_without_series(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    new = _tree(tmp_path / "new", {"x.patch": "X"})
    assert [c.name for c in patch_difference(old, new)] == ["x.patch"]
    assert patch_difference(new, old) == []


CHANGELOG = """redis (5:7.0.15-1~deb12u10) bookworm-security; urgency=high

  * CVE-2026-81934: Prevent a use-after-free in pending TLS data.
  * CVE-2026-92925: Prevent an out-of-bounds read (also CVE-2026-81934).

 -- Someone <x@debian.org>  Thu, 24 Sep 2026 13:34:16 -0700

redis (5:7.0.15-1~deb12u8) bookworm-security; urgency=high

  * CVE-2026-23631: use-after-free on replicas.

 -- Someone <x@debian.org>  Thu, 06 Aug 2026 11:09:14 -0700

redis (5:7.0.15-1~deb12u7) bookworm; urgency=medium

  * CVE-2025-21605: already in the installed version.
"""


def test_changelog_since() -> None:
    from opus_bpf.distro.version import changelog_since

    got = changelog_since(CHANGELOG, "5:7.0.15-1~deb12u7")
    assert got == {"5:7.0.15-1~deb12u10": ["CVE-2026-81934", "CVE-2026-92925"],
                   "5:7.0.15-1~deb12u8": ["CVE-2026-23631"]}
    assert changelog_since(CHANGELOG, "5:7.0.15-1~deb12u10") == {}
