"""Parsing of dpkg-query -S, dpkg-query -W, apt-cache policy and apt-cache show output."""

from __future__ import annotations

from opus_bpf.distro.dpkg import _alternatives, parse_dpkg_search, parse_policy, parse_query
from opus_bpf.distro.pending import parse_source_field

POLICY = """redis-server:
  Installed: 5:7.0.15-1~deb12u7
  Candidate: 5:7.0.15-1~deb12u10
  Version table:
     5:7.0.15-1~deb12u10 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 5:7.0.15-1~deb12u7 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
"""

POLICY_NONE = """redis-server:
  Installed: (none)
  Candidate: 5:7.0.15-1~deb12u10
  Version table:
     5:7.0.15-1~deb12u10 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     5:7.0.15-1~deb12u7 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""


def test_policy() -> None:
    p = parse_policy(POLICY)
    assert p.installed == "5:7.0.15-1~deb12u7"
    assert p.candidate == "5:7.0.15-1~deb12u10"
    assert p.versions == ("5:7.0.15-1~deb12u10", "5:7.0.15-1~deb12u7")


def test_policy_not_installed() -> None:
    p = parse_policy(POLICY_NONE)
    assert p.installed is None
    assert p.versions == ("5:7.0.15-1~deb12u10", "5:7.0.15-1~deb12u7")


def test_dpkg_search() -> None:
    text = ("redis-tools: /usr/bin/redis-check-rdb\n"
            "diversion by dash from: /bin/sh\n"
            "libexpat1:amd64: /usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10\n"
            "libc6:amd64, libc6-dev:amd64: /usr/lib/x86_64-linux-gnu\n")
    assert parse_dpkg_search(text, "/usr/bin/redis-check-rdb") == ["redis-tools"]
    assert parse_dpkg_search(text, "/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10") == \
        ["libexpat1:amd64"]
    assert parse_dpkg_search(text, "/usr/lib/x86_64-linux-gnu") == \
        ["libc6:amd64", "libc6-dev:amd64"]
    assert parse_dpkg_search(text, "/bin/sh") == []


def test_query() -> None:
    i = parse_query("libexpat1\tamd64\t2.5.0-1+deb12u1\texpat\t2.5.0-1+deb12u1\n")
    assert (i.package, i.source, i.source_version) == ("libexpat1", "expat", "2.5.0-1+deb12u1")
    j = parse_query("redis-tools\tamd64\t5:7.0.15-1~deb12u7\t\t\n")
    assert (j.source, j.source_version) == ("redis-tools", "5:7.0.15-1~deb12u7")


def test_source_field() -> None:
    show = "Package: libssl3\nSource: openssl (3.0.22-1~deb12u2)\nVersion: 3.0.22-1~deb12u2+b1\n"
    assert parse_source_field(show, "libssl3", "3.0.22-1~deb12u2+b1") == \
        ("openssl", "3.0.22-1~deb12u2")
    show2 = "Package: redis-tools\nSource: redis\nVersion: 5:7.0.15-1~deb12u10\n"
    assert parse_source_field(show2, "redis-tools", "5:7.0.15-1~deb12u10") == \
        ("redis", "5:7.0.15-1~deb12u10")
    assert parse_source_field("Package: x\n", "x", "1") == ("x", "1")


def test_merged_usr_alternatives() -> None:
    assert "/usr/lib/x86_64-linux-gnu/libz.so.1" in _alternatives("/lib/x86_64-linux-gnu/libz.so.1")
    assert "/lib/x86_64-linux-gnu/libz.so.1" in _alternatives("/usr/lib/x86_64-linux-gnu/libz.so.1")
    assert _alternatives("/opt/x") == ["/opt/x"]
