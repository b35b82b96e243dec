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


def test_line_macro_from_the_program_header(tmp_path):
    # redis: serverAssert (server.h) expands __LINE__ in networking.c; a fix above must not make
    # every later function with an assert "compile differently"
    (tmp_path / "srv.h").write_text(
        "void fail(const char *f, int l);\n"
        "#define srvAssert(e) ((e) ? (void)0 : fail(__FILE__, __LINE__))\n")
    body = "int g(int x)\n{\n    srvAssert(x > 0);\n    return x;\n}\n"
    (tmp_path / "a.c").write_text('#include "srv.h"\nint f(int x)\n{\n    return x;\n}\n' + body)
    (tmp_path / "fix.diff").write_text(
        "--- a/a.c\n+++ b/a.c\n@@ -2,4 +2,6 @@\n int f(int x)\n {\n+    if (x > 9)\n"
        "+        return 9;\n     return x;\n }\n")
    report = analyze_tree(tmp_path, tmp_path / "fix.diff", cflags=["-O2"])
    assert [f.name for f in report.functions] == ["f"]


def test_line_macro_defined_over_several_lines(tmp_path):
    # libevent: EVUTIL_ASSERT (util-internal.h) reaches __LINE__ on a continuation line; a fix
    # that removes lines above must not make later functions "compile differently"
    (tmp_path / "util.h").write_text(
        "void fail(const char *f, int l, const char *c);\n"
        "#define MY_ASSERT(cond)\t\t\\\n"
        "\tdo {\t\t\t\t\\\n"
        "\t\tif (!(cond))\t\t\\\n"
        "\t\t\tfail(__FILE__,\t\\\n"
        "\t\t\t    __LINE__, #cond);\t\\\n"
        "\t} while (0)\n")
    body = "int g(int x)\n{\n    MY_ASSERT(x > 0);\n    return x;\n}\n"
    (tmp_path / "a.c").write_text(
        '#include "util.h"\nint f(int x)\n{\n    if (x > 9)\n        return 9;\n'
        '    return x;\n}\n' + body)
    (tmp_path / "fix.diff").write_text(
        "--- a/a.c\n+++ b/a.c\n@@ -2,6 +2,4 @@\n int f(int x)\n {\n-    if (x > 9)\n"
        "-        return 9;\n     return x;\n }\n")
    report = analyze_tree(tmp_path, tmp_path / "fix.diff", cflags=["-O2"])
    assert [f.name for f in report.functions] == ["f"]
