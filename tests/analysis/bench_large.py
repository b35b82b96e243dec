"""Time the analysis of a bounds-check patch to one function of a ~10,000-line TU.

Run: .venv/bin/python tests/analysis/bench_large.py [lines]
Prints preprocess+parse time per version, the rules' time, and the end-to-end time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gen_large import large_tu, patched  # noqa: E402

from opus_bpf.analysis import analyze_patch, analyze_sources  # noqa: E402
from opus_bpf.analysis.tree import parse_unit  # noqa: E402


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    src = large_tu(lines)
    new = patched(src)
    with tempfile.TemporaryDirectory() as tmp:
        for side, text in (("old", src), ("new", new)):
            (Path(tmp) / side).mkdir()
            (Path(tmp) / side / "big.c").write_text(text)
        t0 = time.perf_counter()
        o = parse_unit(Path(tmp) / "old", "big.c", [])
        t1 = time.perf_counter()
        n = parse_unit(Path(tmp) / "new", "big.c", [])
        t2 = time.perf_counter()
        report = analyze_patch(o, n)
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    analyze_sources(src, new, "big.c")
    t5 = time.perf_counter()
    print(f"{src.count(chr(10))} lines, {sum(1 for _ in o.ast.ext)} top-level decls "
          f"(with headers); verdict {report.verdict.value}")
    print(f"parse old {t1 - t0:.2f}s  parse new {t2 - t1:.2f}s  rules {t3 - t2:.2f}s  "
          f"end-to-end analyze_sources {t5 - t4:.2f}s")


if __name__ == "__main__":
    main()
