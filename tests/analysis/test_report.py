"""Report renderings: JSON round trip, readable text, SARIF 2.1.0 shape, exit codes."""

from __future__ import annotations

import json

import pytest

from opus_bpf.analysis import EXIT_CODES, RULES, Verdict, analyze_sources, exit_code

OLD = """\
int g;
struct s { int a; };
int f(struct s *p, int n)
{
    if (n < 0)
        return -1;
    return 0;
}
int main(void) { return f(0, 1); }
"""

NEW = """\
int g;
struct s { int a; };
int f(struct s *p, int n)
{
    if (n < 0)
        return -1;
    if (n > 9)
        return -5;
    p->a = n;
    g = 1;
    return 0;
}
int main(void) { return f(0, 2); }
"""


@pytest.fixture(scope="module")
def report():
    return analyze_sources(OLD, NEW, name="src/demo.c")


def test_exit_codes() -> None:
    assert exit_code("safe") == 0
    assert exit_code(Verdict.REVIEW) == 3
    assert exit_code(Verdict.UNSUPPORTED) == 4
    r = analyze_sources("int f(int x) { return x; }\n", "int f(int x) { return -x; }\n")
    assert exit_code(r) == r.exit_code == 3
    assert EXIT_CODES == {Verdict.SAFE: 0, Verdict.REVIEW: 3, Verdict.UNSUPPORTED: 4}


def test_overall_is_worst(report) -> None:
    assert report.function("f").verdict is Verdict.REVIEW
    assert report.function("main").verdict is Verdict.UNSUPPORTED
    assert report.verdict is Verdict.UNSUPPORTED and report.exit_code == 4


def test_json(report) -> None:
    data = json.loads(json.dumps(report.to_json()))
    assert data == json.loads(report.to_json_text())
    assert data["verdict"] == "unsupported" and data["exit_code"] == 4
    assert data["files"] == ["src/demo.c"]
    f = next(x for x in data["functions"] if x["name"] == "f")
    assert f["status"] == "changed" and f["verdict"] == "review"
    kinds = sorted((x["kind"], x["line"]) for x in f["findings"])
    assert kinds == [("new-return-value", 8), ("write-global", 10), ("write-param", 9)]
    for x in f["findings"]:
        assert x["file"] == "src/demo.c" and x["message"] and x["code"] and x["verdict"]
    assert next(x for x in f["findings"] if x["kind"] == "write-param")["target"] == "p->a"


def test_text(report) -> None:
    text = report.to_text()
    assert text.startswith("verdict: UNSUPPORTED")
    assert "src/demo.c:8 new-return-value" in text
    assert "return -5;" in text
    assert "exit status: 4" in text


def test_sarif_shape(report) -> None:
    log = json.loads(json.dumps(report.to_sarif()))
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["name"]
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids)) and set(ids) == set(RULES)
    for r in driver["rules"]:
        assert r["shortDescription"]["text"]
        assert r["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
    # f: 3 findings; main: main-function + the write to g it now reaches through f()
    assert len(run["results"]) == 5
    for res in run["results"]:
        assert res["ruleId"] in ids
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in ("none", "note", "warning", "error")
        assert isinstance(res["message"]["text"], str) and res["message"]["text"]
        [loc] = res["locations"]
        phys = loc["physicalLocation"]
        assert phys["artifactLocation"]["uri"] == "src/demo.c"
        assert isinstance(phys["region"]["startLine"], int) and phys["region"]["startLine"] >= 1
    [inv] = run["invocations"]
    assert inv["executionSuccessful"] is True and inv["exitCode"] == 4
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["main-function"] == "error" and levels["write-global"] == "warning"


def test_safe_report_renders() -> None:
    r = analyze_sources("int f(int x) { return x; }\n", "int f(int x) { return x; }\n")
    assert r.verdict is Verdict.SAFE and r.functions == []
    assert "no function changed" in r.to_text()
    assert r.to_sarif()["runs"][0]["results"] == []


def test_first_reason_covers_file_scope() -> None:
    r = analyze_sources("int limit = 4;\nint f(void) { return limit; }\n",
                        "int limit = 8;\nint f(void) { return limit; }\n", name="x.c")
    assert r.verdict is Verdict.UNSUPPORTED and r.functions == []
    assert r.first_reason().startswith("initialiser of global limit changed")
    assert r.first_reason().endswith("(x.c:1)")
    assert r.first_reason("review") == ""
