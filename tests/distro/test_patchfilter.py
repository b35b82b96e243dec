"""Patch sections of files no binary is built from are dropped (tests, docs)."""

from __future__ import annotations

import json
from pathlib import Path

from opus_bpf.distro.patchfilter import compiled_files, filter_patch, split_sections

PATCH = """From: someone
Subject: fix it

---
 src/a.c | 2 +-

diff --git a/src/a.c b/src/a.c
index 1..2 100644
--- a/src/a.c
+++ b/src/a.c
@@ -1,3 +1,3 @@
 int f(void)
-{ return 1; }
+{ return 2; }
diff --git a/src/a.h b/src/a.h
--- a/src/a.h
+++ b/src/a.h
@@ -1 +1 @@
-int f(void);
+int f(void); /* fixed */
diff --git a/test/regress.c b/test/regress.c
--- a/test/regress.c
+++ b/test/regress.c
@@ -1 +1,2 @@
 int t;
+int u;
diff --git a/tests/unit/x.tcl b/tests/unit/x.tcl
--- a/tests/unit/x.tcl
+++ b/tests/unit/x.tcl
@@ -1 +1 @@
-a
+b
"""


def test_split_sections() -> None:
    paths = [p for p, _ in split_sections(PATCH)]
    assert paths == ["", "src/a.c", "src/a.h", "test/regress.c", "tests/unit/x.tcl"]
    assert "".join(t for _, t in split_sections(PATCH)) == PATCH


def test_filter(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    cc = tmp_path / "cc.json"
    cc.write_text(json.dumps([{"directory": str(tree / "src"), "file": "a.c", "arguments": []}]))
    compiled = compiled_files(cc, tree)
    assert compiled == {"src/a.c"}
    p = tmp_path / "fix.patch"
    p.write_text(PATCH)
    out, dropped = filter_patch(p, compiled, tmp_path / "out.patch")
    assert dropped == ["test/regress.c", "tests/unit/x.tcl"]
    text = out.read_text()
    assert "src/a.c" in text and "src/a.h" in text and "regress" not in text
    assert text.startswith("From: someone")


def test_nothing_to_drop(tmp_path: Path) -> None:
    p = tmp_path / "fix.patch"
    p.write_text(PATCH.split("diff --git a/src/a.h")[0])
    assert filter_patch(p, {"src/a.c"}, tmp_path / "o.patch") == (p, [])
