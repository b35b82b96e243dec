"""A constant macro whose value happens to equal its line number is not __LINE__.

Regression: the demo server's `char out[MAX_LINE + 64]` (MAX_LINE 256) sat on line 256; a fix two
lines above moved it, and the unchanged function was reported as "compiles differently".
"""

from pathlib import Path

from opus_bpf.analysis import Verdict, analyze_sources, analyze_tree

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def test_constant_macro_equal_to_its_line_is_not_a_line_number():
    # the demo's fix adds two lines above serve_session, whose MAX_LINE (256) sat on line 256
    src = (DEMO / "server.c").read_text().splitlines()
    assert any(i + 1 == 256 and "MAX_LINE" in ln for i, ln in enumerate(src))
    report = analyze_tree(DEMO, DEMO / "fix.diff", cflags=["-O2", "-g"])
    assert [f.name for f in report.functions] == ["handle_request"]
    assert report.verdict == Verdict.SAFE


def test_assert_line_numbers_still_ignored_when_a_function_moves():
    old = "#include <assert.h>\nint f(int x)\n{\n    assert(x > 0);\n    return x;\n}\n"
    new = "#include <assert.h>\n\n\nint f(int x)\n{\n    assert(x > 0);\n    return x;\n}\n"
    report = analyze_sources(old, new, name="a.c")
    assert [f.name for f in report.functions] == []
