"""analyze_tree end to end: a real tree with glibc headers, a unified diff applied with patch(1),
per-file flags from compile_commands.json, header changes, and diffs that do not apply."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opus_bpf.analysis import Verdict, analyze_patch, analyze_sources, analyze_tree
from opus_bpf.analysis.tree import PatchError, parse_unit
from opus_bpf.errors import OpusError

sys.path.insert(0, str(Path(__file__).parent))
from gen_large import large_tu, patched  # noqa: E402

PROTO_H = """\
#ifndef PROTO_H
#define PROTO_H
#include <stddef.h>
struct msg { int type; size_t len; char body[MAXBODY]; };
int handle_msg(struct msg *m, const char *wire, size_t n);
#endif
"""

SERVER_C = """\
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "proto.h"

static unsigned long handled;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void count(void)
{
    pthread_mutex_lock(&lock);
    handled++;
    pthread_mutex_unlock(&lock);
}

int handle_msg(struct msg *m, const char *wire, size_t n)
{
    if (n < 1)
        return -1;
    m->type = wire[0];
    m->len = n - 1;
    memcpy(m->body, wire + 1, n - 1);
    count();
    return 0;
}

static void *worker(void *arg)
{
    struct msg m;
    const char *w = arg;
    handle_msg(&m, w, strlen(w));
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t t;
    if (argc < 2)
        return 1;
    pthread_create(&t, NULL, worker, argv[1]);
    pthread_join(t, NULL);
    printf("%lu\\n", handled);
    return 0;
}
"""


def _tree(root: Path, server: str = SERVER_C, proto: str = PROTO_H) -> Path:
    (root / "include").mkdir(parents=True, exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    (root / "include" / "proto.h").write_text(proto)
    (root / "src" / "server.c").write_text(server)
    return root


def _diff(tmp: Path, old: Path, new: Path) -> Path:
    """A git-style unified diff (a/ b/ prefixes) made by diff(1)."""
    res = subprocess.run(["diff", "-ruN", "old", "new"], cwd=tmp, capture_output=True,
                         text=True)
    text = res.stdout.replace("--- old/", "--- a/").replace("+++ new/", "+++ b/")
    out = tmp / "fix.diff"
    out.write_text(text)
    return out


def _pair(tmp_path: Path, server_new: str, proto_new: str = PROTO_H) -> tuple[Path, Path]:
    old = _tree(tmp_path / "old")
    _tree(tmp_path / "new", server_new, proto_new)
    return old, _diff(tmp_path, old, tmp_path / "new")


FLAGS = ["-Iinclude", "-DMAXBODY=256"]


def test_bounds_check_is_safe(tmp_path: Path) -> None:
    fixed = SERVER_C.replace(
        "    if (n < 1)\n        return -1;\n",
        "    if (n < 1)\n        return -1;\n"
        "    if (n - 1 > sizeof(m->body))\n        return -1;\n",
    )
    src, diff = _pair(tmp_path, fixed)
    report = analyze_tree(src, diff, cflags=FLAGS)
    assert report.verdict is Verdict.SAFE, report.to_text()
    assert [(f.name, f.status) for f in report.functions] == [("handle_msg", "changed")]
    assert report.files == ["src/server.c"]
    assert report.exit_code == 0
    # the original tree is untouched
    assert (src / "src" / "server.c").read_text() == SERVER_C


def test_new_error_code_and_write_via_helper(tmp_path: Path) -> None:
    fixed = SERVER_C.replace(
        "    if (n < 1)\n        return -1;\n",
        "    if (n < 1)\n        return -1;\n    if (n - 1 > sizeof(m->body)) {\n"
        "        count();\n        return -2;\n    }\n",
    ).replace("    m->len = n - 1;\n    memcpy(m->body, wire + 1, n - 1);\n    count();\n",
              "    m->len = n - 1;\n    memcpy(m->body, wire + 1, n - 1);\n")
    src, diff = _pair(tmp_path, fixed)
    report = analyze_tree(src, diff, cflags=" ".join(FLAGS))
    kinds = sorted((f.kind, f.line) for f in report.all_findings())
    # count() moved into the error path: same writes as before; -2 is new
    assert kinds == [("new-return-value", 23)], report.to_text()
    assert report.verdict is Verdict.REVIEW and report.exit_code == 3
    f = report.all_findings()[0]
    assert f.file == "src/server.c" and f.code == "return -2;"


def test_thread_routine_and_main(tmp_path: Path) -> None:
    fixed = SERVER_C.replace("    handle_msg(&m, w, strlen(w));",
                             "    if (!w)\n        return NULL;\n    handle_msg(&m, w, strlen(w));")
    fixed = fixed.replace("    if (argc < 2)\n        return 1;",
                          "    if (argc != 2)\n        return 1;")
    src, diff = _pair(tmp_path, fixed)
    report = analyze_tree(src, diff, cflags=FLAGS)
    kinds = {(f.function, f.kind) for f in report.all_findings()}
    assert kinds == {("worker", "thread-start-routine"), ("main", "main-function")}
    assert report.verdict is Verdict.UNSUPPORTED and report.exit_code == 4


def test_header_struct_change_reaches_including_tu(tmp_path: Path) -> None:
    proto = PROTO_H.replace("int type;", "int type;\n    int flags;")
    src, diff = _pair(tmp_path, SERVER_C, proto)
    report = analyze_tree(src, diff, cflags=FLAGS)
    assert report.files == ["src/server.c"]
    [g] = report.global_findings
    assert g.kind == "type-changed" and g.file == "include/proto.h" and g.line == 4
    assert "handle_msg" in g.message
    assert report.verdict is Verdict.UNSUPPORTED


def test_compile_commands_flags(tmp_path: Path) -> None:
    """compile_commands.json supplies per-file flags (relative -I rebased onto the tree)."""
    fixed = SERVER_C.replace("    m->len = n - 1;",
                             "    m->len = n - 1;\n    if (m->len > MAXBODY)\n        return -1;")
    src, diff = _pair(tmp_path, fixed)
    cc = tmp_path / "compile_commands.json"
    cc.write_text(json.dumps([{
        "directory": str(src / "src"),
        "command": "cc -c -O2 -I../include -DMAXBODY=64 -Wall -o server.o server.c",
        "file": "server.c",
    }]))
    report = analyze_tree(src, diff, compile_commands=cc)
    assert report.verdict is Verdict.SAFE, report.to_text()
    # without -I the header is not found: reported as a finding, not a crash
    bad = analyze_tree(src, diff, cflags=[])
    assert bad.verdict is Verdict.UNSUPPORTED
    assert [g.kind for g in bad.global_findings] == ["parse-error"]


def test_patch_that_does_not_apply(tmp_path: Path) -> None:
    src = _tree(tmp_path / "old")
    diff = tmp_path / "bad.diff"
    diff.write_text("--- a/src/server.c\n+++ b/src/server.c\n@@ -1,1 +1,1 @@\n-nothing here\n"
                    "+still nothing\n")
    with pytest.raises(PatchError) as exc:
        analyze_tree(src, diff, cflags=FLAGS)
    assert isinstance(exc.value, OpusError) and "does not apply" in exc.value.message
    with pytest.raises(PatchError):
        analyze_tree(tmp_path / "nope", diff, cflags=FLAGS)
    with pytest.raises(PatchError):
        analyze_tree(src, tmp_path / "missing.diff", cflags=FLAGS)


def test_analyze_patch_on_bare_asts() -> None:
    """The library API works on pycparser FileASTs directly (no files: no macro rule)."""
    from pycparser import c_parser

    old = c_parser.CParser().parse("int g; int f(int *p) { return 0; }", "x.c")
    new = c_parser.CParser().parse("int g; int f(int *p) { *p = 1; g = 2; return 0; }", "x.c")
    report = analyze_patch(old, new)
    assert sorted(f.kind for f in report.all_findings()) == ["write-global", "write-param"]
    assert report.function("f").verdict is Verdict.REVIEW


def test_analyze_patch_on_cfront_tus(tmp_path: Path) -> None:
    from opus_bpf import cfront

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "m.c").write_text("int f(int x) { return x; }\n")
    (tmp_path / "b" / "m.c").write_text("int f(int x) { if (x < 0) return -9; return x; }\n")
    old = cfront.parse("m.c", [], tmp_path / "a")
    new = cfront.parse("m.c", [], tmp_path / "b")
    report = analyze_patch([old], [new], old_root=tmp_path / "a", new_root=tmp_path / "b")
    [f] = report.all_findings()
    assert (f.kind, f.file, f.line) == ("new-return-value", "m.c", 1)
    assert f.code == "int f(int x) { if (x < 0) return -9; return x; }"  # read from the tree


def test_large_tu_speed(tmp_path: Path) -> None:
    """A bounds-check fix to one function of a ~10,000-line TU (plus glibc headers)."""
    src = large_tu(10_000)
    assert src.count("\n") >= 10_000
    for side, text in (("old", src), ("new", patched(src))):
        (tmp_path / side).mkdir()
        (tmp_path / side / "big.c").write_text(text)
    t0 = time.perf_counter()
    old = parse_unit(tmp_path / "old", "big.c", [])
    new = parse_unit(tmp_path / "new", "big.c", [])
    t1 = time.perf_counter()
    report = analyze_patch(old, new)
    t2 = time.perf_counter()
    assert report.verdict is Verdict.SAFE, report.to_text()
    assert [f.name for f in report.functions] == ["process_7"]
    print(f"\nparse old+new {t1 - t0:.2f}s, rules {t2 - t1:.2f}s")
    assert t2 - t1 < 3.0


def test_sources_helper_reports_parse_errors() -> None:
    report = analyze_sources("int f(void) { return 0; }\n", "int f(void) { return 0 }\n")
    assert report.verdict is Verdict.UNSUPPORTED
    assert report.global_findings[0].kind == "parse-error"


def test_cli_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`opus-bpf analyze` as the CLI calls this package: text, --json, --sarif, exit codes."""
    from opus_bpf import cli

    fixed = SERVER_C.replace("    if (n < 1)\n        return -1;\n",
                             "    if (n < 1 || n > 4096)\n        return -1;\n")
    src, diff = _pair(tmp_path, fixed)
    sarif = tmp_path / "fix.sarif"
    rc = cli.main(["analyze", "--src", str(src), "--patch", str(diff),
                   "--cflags", " ".join(FLAGS), "--sarif", str(sarif)])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("verdict: SAFE")
    assert json.loads(sarif.read_text())["version"] == "2.1.0"

    fixed = SERVER_C.replace("    if (n < 1)\n        return -1;\n",
                             "    if (n < 1)\n        return -1;\n    if (n > 4096)\n"
                             "        return -2;\n")
    src, diff = _pair(tmp_path / "b", fixed)
    rc = cli.main(["analyze", "--src", str(src), "--patch", str(diff),
                   "--cflags", " ".join(FLAGS), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 3 and data["verdict"] == "review"


def test_header_inline_change_reported_once(tmp_path: Path) -> None:
    """A static inline in a header included by two TUs: one finding, not one per TU."""
    for side, body in (("old", "return v < 0 ? 0 : v;"), ("new", "return v < 0 ? 0 : v & 255;")):
        root = tmp_path / side
        root.mkdir()
        (root / "util.h").write_text(f"static inline int clampi(int v) {{ {body} }}\n")
        (root / "a.c").write_text('#include "util.h"\nint a(int v) { return clampi(v); }\n')
        (root / "b.c").write_text('#include "util.h"\nint b(int v) { return clampi(v) + 1; }\n')
    diff = _diff(tmp_path, tmp_path / "old", tmp_path / "new")
    report = analyze_tree(tmp_path / "old", diff)
    assert report.files == ["a.c", "b.c"]
    assert [(f.name, f.file) for f in report.functions] == [("clampi", "util.h")]
    assert [f.kind for f in report.all_findings()] == ["inline-changed", "new-return-value"]


def test_thread_started_from_another_tu(tmp_path: Path) -> None:
    """worker() lives in worker.c; main.c starts it. Only worker.c changes."""
    for side, extra in (("old", ""), ("new", "    if (!arg)\n        return arg;\n")):
        root = tmp_path / side
        root.mkdir()
        (root / "worker.c").write_text(f"void *worker(void *arg)\n{{\n{extra}    return arg;\n}}\n")
        (root / "main.c").write_text(
            "#include <pthread.h>\nvoid *worker(void *);\nint main(void)\n{\n"
            "    pthread_t t;\n    return pthread_create(&t, NULL, (void *(*)(void *))&worker, "
            "NULL);\n}\n")
    diff = _diff(tmp_path, tmp_path / "old", tmp_path / "new")
    report = analyze_tree(tmp_path / "old", diff)
    assert report.files == ["worker.c"]
    assert [f.kind for f in report.all_findings()] == ["thread-start-routine"]


LOG_C = """\
int log_count;
void log_it(int code)
{
    log_count++;
}
void fill(int *out)
{
    *out = 0;
}
"""


def test_calls_into_other_tus_with_compile_commands(tmp_path: Path) -> None:
    """With a compilation database, a call into another file uses that file's summary."""
    old_a = "void log_it(int);\nvoid fill(int *);\nint a(int x)\n{\n    return x;\n}\n"
    new_a = ("void log_it(int);\nvoid fill(int *);\nint a(int x)\n{\n    int tmp;\n"
             "    fill(&tmp);\n    if (x < 0)\n        log_it(x);\n    return x;\n}\n")
    for side, text in (("old", old_a), ("new", new_a)):
        (tmp_path / side).mkdir()
        (tmp_path / side / "a.c").write_text(text)
        (tmp_path / side / "log.c").write_text(LOG_C)
    diff = _diff(tmp_path, tmp_path / "old", tmp_path / "new")
    src = tmp_path / "old"
    cc = tmp_path / "compile_commands.json"
    cc.write_text(json.dumps([{"directory": str(src), "command": f"cc -c {f}", "file": f}
                              for f in ("a.c", "log.c")]))
    with_db = analyze_tree(src, diff, compile_commands=cc)
    got = [(f.kind, f.line, f.target) for f in with_db.all_findings()]
    # fill(&tmp) writes only the frame; log_it() bumps a global in log.c
    assert got == [("write-global", 8, "log_count")], with_db.to_text()
    assert "another file" in with_db.all_findings()[0].message
    without = analyze_tree(src, diff)
    assert sorted((f.kind, f.line) for f in without.all_findings()) == [
        ("unknown-call", 6), ("unknown-call", 8)]
