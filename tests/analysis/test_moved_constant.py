"""A constant macro whose value happens to equal its line number is not __LINE__.

Regression: the demo server's `char out[MAX_LINE + 64]` (MAX_LINE 256) sat on line 256; a fix two
lines above moved it, and the unchanged function was reported as "compiles differently".
"""

from opus_bpf.analysis import Verdict, analyze_sources

FILLER = "\n" * 20


def _program(extra_line: str) -> str:
    head = "#define SIZE 24\nint helper(int x)\n{\n" + extra_line + "    return x;\n}\n"
    # `SIZE` is used on line 24 of the old file: its value equals its line number there
    body_start = head.count("\n")
    pad = "\n" * (23 - body_start - 2)
    return head + pad + "int user(void)\n{\n    char buf[SIZE];\n    return sizeof buf;\n}\n"


def test_constant_macro_equal_to_its_line_is_not_a_line_number():
    old = _program("")
    new = _program("    if (x < 0) return x;\n")
    assert old.splitlines()[23].strip() == "char buf[SIZE];"  # line 24 holds SIZE == 24
    report = analyze_sources(old, new, name="moved.c")
    names = {f.name: f for f in report.functions}
    assert "user" not in names, names["user"].findings if "user" in names else None
    assert report.verdict in (Verdict.SAFE, Verdict.REVIEW)


def test_assert_line_numbers_still_ignored_when_a_function_moves():
    old = "#include <assert.h>\nint f(int x)\n{\n    assert(x > 0);\n    return x;\n}\n"
    new = "#include <assert.h>\n\n\nint f(int x)\n{\n    assert(x > 0);\n    return x;\n}\n"
    report = analyze_sources(old, new, name="a.c")
    assert [f.name for f in report.functions] == []
