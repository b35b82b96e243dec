"""A changed function whose old code also lives outside its own symbol: inlined into other
functions (DWARF DW_TAG_inlined_subroutine, no symbol of its own), only present as a
.constprop clone that callers call directly, or split by partial inlining (head inlined,
rest in .part.0). The build replaces the functions holding that
code (and copies the changed function into the patch), or refuses naming them (main); the
bundles are then applied one after the other to a live process, which must print what the
program built from the fixed source prints, and reverted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from buildharness import DATA

from opus_bpf.patchbuild import BuildError, build_bundle
from opus_bpf.patchbuild.elfinfo import read_target

SRC = DATA / "inlined"
FLAGS = ["-O2", "-g", "-fno-ipa-ra"]  # -fno-ipa-ra: the clone's callers change registers
CHECK_FIX = [("    if (len > limit)", "    if (len >= limit)")]
SCALE_FIX = [("r += factor * i + (x >> i);", "r += factor * i + (x >> (i + 1));")]
LOOKUP_FIX = [("h = h * 31 + s[i];", "h = h * 33 + s[i];")]


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inlined") / "srv"
    subprocess.run(["gcc", *FLAGS, "-fPIE", "-pie", "-o", str(out), "srv.c"], cwd=SRC,
                   check=True)
    syms = read_target(out).symbols
    group = syms.locals_by_file.get("srv.c", {})
    # what gcc 12 -O2 does with this file; the test is about exactly this shape
    assert "check" not in group and "scale" not in group and "banner" not in group
    assert "scale.constprop.0" in group and "lookup.part.0" in group
    return out


def _line(tmp: Path, *fixes: list[tuple[str, str]]) -> str:
    """What the program prints when built from the source with *fixes* applied."""
    text = (SRC / "srv.c").read_text()
    for fix in fixes:
        for old, new in fix:
            text = text.replace(old, new, 1)
    d = tmp / f"v{len(list(tmp.iterdir()))}"
    d.mkdir()
    (d / "srv.c").write_text(text)
    subprocess.run(["gcc", *FLAGS, "-o", str(d / "srv"), "srv.c"], cwd=d, check=True)
    p = subprocess.Popen([str(d / "srv"), "64"], stdout=subprocess.PIPE, text=True)
    try:
        p.stdout.readline()  # type: ignore[union-attr]
        return p.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        p.kill()
        p.wait()


def test_inlined_copies_replace_their_holders(binary, make_diff, tmp_path: Path) -> None:
    res = build_bundle(SRC, make_diff(CHECK_FIX, rel="srv.c", src=SRC), binary,
                       tmp_path / "check.opus", cflags=FLAGS)
    assert res.functions_replaced == ["handle_a", "handle_b"]
    assert res.functions_added == ["check"]
    assert [a.reason for a in res.manifest.added_functions] == ["copied"]
    assert any("also replaces handle_a (holds check (inlined))" in w for w in res.warnings)


def test_clone_callers_are_replaced(binary, make_diff, tmp_path: Path) -> None:
    res = build_bundle(SRC, make_diff(SCALE_FIX, rel="srv.c", src=SRC), binary,
                       tmp_path / "scale.opus", cflags=FLAGS)
    assert res.functions_replaced == ["use_scale", "use_scale2"]
    assert res.functions_added == ["scale"]
    assert any("holds scale (calls scale.constprop.0)" in w for w in res.warnings)


def test_partial_inlining_holders_are_replaced(binary, make_diff, tmp_path: Path) -> None:
    # lookup's early return is inlined into find_a/find_b, the rest is lookup.part.0
    res = build_bundle(SRC, make_diff(LOOKUP_FIX, rel="srv.c", src=SRC), binary,
                       tmp_path / "lookup.opus", cflags=FLAGS)
    assert res.functions_replaced == ["find_a", "find_b"]
    assert res.functions_added == ["lookup"]


def test_inlined_into_main_is_refused(binary, make_diff, tmp_path: Path) -> None:
    diff = make_diff([('"inlined n=%d\\n"', '"banner n=%d\\n"')], rel="srv.c", src=SRC)
    with pytest.raises(BuildError, match=r"banner \(srv.c\) is inlined into main, which a "
                                         r"running process never re-enters"):
        build_bundle(SRC, diff, binary, tmp_path / "b.opus", cflags=FLAGS)


def _opus(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "opus_bpf.cli", *args, "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _next(proc: subprocess.Popen, want: str) -> str:
    """Lines until *want* shows: the pipe still holds the lines printed while opus-bpf ran
    (one every 20 ms); give up after 10 s of new lines."""
    line = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        if line == want:
            return line
    return line


@pytest.mark.root
def test_live_apply_and_revert(binary, make_diff, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (ptrace + BPF)")
    fixes = {"check": CHECK_FIX, "scale": SCALE_FIX, "lookup": LOOKUP_FIX}
    bundles = {}
    for name, fix in fixes.items():
        bundles[name] = tmp_path / f"{name}.opus"
        build_bundle(SRC, make_diff(fix, rel="srv.c", src=SRC), binary, bundles[name],
                     cflags=FLAGS)
    builds = tmp_path / "builds"
    builds.mkdir()
    # expected output: the same program built from the fixed sources
    want = [_line(builds), _line(builds, CHECK_FIX), _line(builds, CHECK_FIX, SCALE_FIX),
            _line(builds, CHECK_FIX, SCALE_FIX, LOOKUP_FIX)]
    assert len(set(want)) == 4  # every fix changes what the program prints
    proc = subprocess.Popen([str(binary), "64"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inlined n=64"  # type: ignore[union-attr]
        assert _next(proc, want[0]) == want[0]
        for i, name in enumerate(fixes, start=1):
            a = _opus("apply", str(bundles[name]), "--pid", str(proc.pid))
            assert a["functions"], a
            assert _next(proc, want[i]) == want[i], f"after applying {name}"
        for name in reversed(list(fixes)):
            _opus("revert", str(bundles[name]), "--pid", str(proc.pid))
        assert _next(proc, want[0]) == want[0]
    finally:
        proc.kill()
        proc.wait()
