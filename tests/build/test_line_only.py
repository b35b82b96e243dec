"""A fix that adds lines above a function whose only difference is then the value of an
assert's __LINE__: that function is not replaced (the replaced one keeps its real lines)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from buildharness import CFLAGS, unified_diff

from opus_bpf.patchbuild import build_bundle

SRC = """#include <stdio.h>
#include <stdlib.h>
#define CHECK(c) \\
    do { if (!(c)) { fprintf(stderr, "%s:%d\\n", __FILE__, __LINE__); abort(); } } while (0)

int __attribute__((noinline)) parse(int n)
{
    return n * 2;
}

int __attribute__((noinline)) later(int n)
{
    CHECK(n < 1000);
    return n + 1;
}

int main(int argc, char **argv)
{
    return parse(argc) + later(argc) > 100;
}
"""


def test_line_number_only_changes_are_not_replaced(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "prog.c").write_text(SRC)
    binary = tmp_path / "prog"
    subprocess.run(["gcc", *CFLAGS, "-o", str(binary), "prog.c"], cwd=src, check=True)
    new = SRC.replace("    return n * 2;\n",
                      "    if (n > 50)\n        return 0;\n    return n * 2;\n")
    diff = tmp_path / "fix.diff"
    diff.write_text(unified_diff(src, "prog.c", new))
    res = build_bundle(src, diff, binary, tmp_path / "fix.opus", cflags=CFLAGS)
    assert res.functions_replaced == ["parse"]
