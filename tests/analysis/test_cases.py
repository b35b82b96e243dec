"""Data-driven OPUS rule cases: tests/analysis/cases/NN_name/{old.c,new.c,expect.json}.

Each case is a real old/new pair run through the real preprocessor, parser and rules; the
expected verdict and the exact (function, kind, line) findings are in expect.json.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from opus_bpf.analysis import analyze_sources

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path) -> None:
    expect = json.loads((case / "expect.json").read_text())
    report = analyze_sources((case / "old.c").read_text(), (case / "new.c").read_text(),
                             name="case.c")
    got = Counter((f.function, f.kind, f.line) for f in report.all_findings())
    want = Counter((f["function"], f["kind"], f["line"]) for f in expect["findings"])
    assert got == want, report.to_text()
    assert report.verdict.value == expect["verdict"], report.to_text()
    for f in report.all_findings():
        assert f.file == "case.c" and f.message and f.code


def test_enough_cases() -> None:
    assert len(CASES) >= 40
