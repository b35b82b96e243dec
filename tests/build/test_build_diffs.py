"""Diff handling: git-style and diff(1)-style headers, strip levels, refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from buildharness import CFLAGS, COUNTER, DATA

from opus_bpf.patchbuild import BuildError, build_bundle
from opus_bpf.patchbuild.diffapply import apply_patch, copy_tree

FIX = DATA / "counter" / "fix.diff"


def git_style(diff: str) -> str:
    return ("diff --git a/server.c b/server.c\nindex 1234567..89abcde 100644\n" + diff)


def test_git_style_and_timestamps(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    copy_tree(COUNTER, tree)
    d = tmp_path / "g.diff"
    d.write_text(git_style(FIX.read_text()))
    assert [c.path for c in apply_patch(tree, d)] == ["server.c"]
    tree2 = tmp_path / "t2"
    copy_tree(COUNTER, tree2)
    d2 = tmp_path / "ts.diff"
    d2.write_text(FIX.read_text()
                  .replace("--- a/server.c", "--- server.c.orig\t2026-01-01 00:00:00 +0000")
                  .replace("+++ b/server.c", "+++ server.c\t2026-01-01 00:00:01 +0000"))
    assert [c.path for c in apply_patch(tree2, d2)] == ["server.c"]
    assert (tree2 / "server.c").read_text() == (tree / "server.c").read_text()
    assert not list(tree2.glob("*.orig")) and not list(tree2.glob("*.rej"))


def test_already_applied(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    copy_tree(COUNTER, tree)
    apply_patch(tree, FIX)
    with pytest.raises(BuildError, match="already applied"):
        apply_patch(tree, FIX)


def test_not_a_diff(tmp_path: Path) -> None:
    d = tmp_path / "x.diff"
    d.write_text("just text\n")
    with pytest.raises(BuildError, match="not a unified diff"):
        apply_patch(tmp_path, d)
    with pytest.raises(BuildError, match="cannot read patch"):
        apply_patch(tmp_path, tmp_path / "missing.diff")


def test_new_source_file_refused(counter_bins, tmp_path: Path) -> None:
    d = tmp_path / "new.diff"
    d.write_text("--- /dev/null\n+++ b/extra.c\n@@ -0,0 +1 @@\n+int extra(void) { return 1; }\n")
    with pytest.raises(BuildError, match="creates extra.c"):
        build_bundle(COUNTER, d, counter_bins["nopie"], tmp_path / "x.opus", cflags=CFLAGS)


def test_source_tree_untouched_and_binary_in_tree(counter_bins, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(COUNTER, src)
    shutil.copy(counter_bins["nopie"], src / "server")  # as a Makefile build leaves it
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file() and ".git" not in p.parts}
    res = build_bundle(src, FIX, src / "server", tmp_path / "x.opus", cflags=CFLAGS)
    assert res.functions_replaced == ["handle"]
    after = {p: p.read_bytes() for p in src.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert before == after
