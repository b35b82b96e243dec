"""Debian version ordering and the patch-set difference between two source versions.

Kept free of subprocesses so the logic the rest depends on is testable in milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from opus_bpf.patchbuild.quilt import series_entries


def _split(version: str) -> tuple[int, str, str]:
    """epoch, upstream, revision (dpkg's parseversion)."""
    v = version.strip()
    epoch = 0
    if ":" in v:
        e, v = v.split(":", 1)
        epoch = int(e) if e else 0
    if "-" in v:
        upstream, revision = v.rsplit("-", 1)
    else:
        upstream, revision = v, ""
    return epoch, upstream, revision


def _order(c: str) -> int:
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternating non-digit runs (~ sorts first) and numeric runs."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as `dpkg --compare-versions a lt/eq/gt b` would say."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def strip_epoch(version: str) -> str:
    """The version as it appears in source file names (`redis_7.0.15-1~deb12u10.dsc`)."""
    return version.split(":", 1)[1] if ":" in version else version


def parse_series(text: str) -> list[str]:
    """Patch names of a quilt `series` file, in order (the build's series reader, -pN dropped)."""
    return [name for name, _level in series_entries(text)]


@dataclass(frozen=True)
class PatchChange:
    """A patch the newer source carries that the older one lacks (or carries differently)."""

    name: str
    status: str  # "new" | "changed"
    path: Path  # the patch file in the newer tree


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def patch_difference(old_tree: Path, new_tree: Path) -> list[PatchChange]:
    """Patches in `new_tree/debian/patches/series` that `old_tree` does not have with the same
    content, in the newer series' order: these are the fixes the installed version lacks."""
    def series(tree: Path) -> list[str]:
        s = tree / "debian" / "patches" / "series"
        return parse_series(s.read_text(errors="replace")) if s.is_file() else []

    old = set(series(old_tree))
    out = []
    for name in series(new_tree):
        p = new_tree / "debian" / "patches" / name
        if not p.is_file():
            continue
        if name not in old:
            out.append(PatchChange(name, "new", p))
            continue
        q = old_tree / "debian" / "patches" / name
        if not q.is_file() or _digest(p) != _digest(q):
            out.append(PatchChange(name, "changed", p))
    return out


_HEADER = re.compile(r"^(\S+) \(([^)]+)\) [^;]*;")


def changelog_since(text: str, since: str) -> dict[str, list[str]]:
    """CVE ids named by each debian/changelog entry newer than *since* (newest first): what an
    update fixes, when the installed version's own source cannot be had to diff patches."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            current = m.group(2) if compare_versions(m.group(2), since) > 0 else None
            if current is None:
                break
            out[current] = []
        elif current is not None:
            for cve in re.findall(r"CVE-\d{4}-\d{4,}", line):
                if cve not in out[current]:
                    out[current].append(cve)
    return out
