#!/usr/bin/env python3
"""opus-bpf apply on the bench targets, against the floor of stopping every thread, same run.

For each shape (threads x mode) it starts bench/target, measures the floor (bench/floor, normal
and SCHED_FIFO policy: opus-bpf raises itself to SCHED_FIFO 1 while it pauses), then applies and
reverts bench/work_fix.diff `--cycles` times through the Python API and reports, per shape:
  pause     all threads stopped during the successful look (µs; p50/p99 over applies+reverts)
  looks     stop-the-world looks per apply (each is one pause)
  wait      quiescence wait: probes attached -> quiescent look (ms)
  apply     whole apply_bundle() wall time (ms), and its parts: load, probe setup, probe detach
  cli       one `opus-bpf apply` as a user runs it (process start, imports, BPF compile) (ms)
Then the per-call cost of work(): ns/call before and after the patch (one jump more).
Prints a table, then the JSON (also saved under bench/results/). Needs root.

  .venv/bin/python bench/bench_apply.py                        # 1, 16, 64 threads x spin, paced
  .venv/bin/python bench/bench_apply.py --threads 16 --modes paced --cycles 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import BENCH, RESULTS, Target, build, floor, fmt_us, machine  # noqa: E402

from opus_bpf.runtime.apply import apply_bundle, revert_bundle  # noqa: E402


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def make_bundle(target_bin: Path, out: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "opus_bpf.cli",
        "build",
        "--src",
        str(BENCH),
        "--patch",
        str(BENCH / "work_fix.diff"),
        "--binary",
        str(target_bin),
        "--cflags",
        "-O2 -g",
        "-o",
        str(out),
        "--accept-review",  # the analysis rightly asks: work() returns new values
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def run_shape(
    bins: dict[str, Path], bundle: Path, mode: str, threads: int, cycles: int, floor_rounds: int
) -> dict:
    with Target(bins["target"], mode, threads) as t:
        time.sleep(0.3)
        base = t.probe(1)
        fl = floor(bins["floor"], t.pid, floor_rounds, 2000, mode="all")["all"]["pause"]
        fl_fifo = floor(bins["floor"], t.pid, floor_rounds, 2000, mode="all", fifo=True)["all"][
            "pause"
        ]
        pauses, looks, waits, totals, loads, setups, detaches, failures = (
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            0,
        )
        for _ in range(cycles):
            try:
                r = apply_bundle(str(bundle), t.pid, timeout=30)
            except Exception as exc:  # noqa: BLE001 - a timeout is a figure too
                failures += 1
                print(f"  apply failed: {getattr(exc, 'message', exc)}", file=sys.stderr)
                continue
            assert t.probe(1) != base, "patched work() is not live"
            pauses.append(r.pause_seconds * 1e6)
            looks.append(r.attempts)
            waits.append(r.wait_seconds * 1e3)
            totals.append(r.total_seconds * 1e3)
            loads.append(r.load_seconds * 1e3)
            setups.append(r.probe_setup_seconds * 1e3)
            detaches.append(r.probe_detach_seconds * 1e3)
            rv = revert_bundle(str(bundle), t.pid, timeout=30)
            pauses.append(rv.pause_seconds * 1e6)
            assert t.probe(1) == base
        t0 = time.monotonic()
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "opus_bpf.cli",
                "apply",
                str(bundle),
                "--pid",
                str(t.pid),
                "--timeout",
                "30",
            ],
            capture_output=True,
            text=True,
        )
        cli_ms = (time.monotonic() - t0) * 1e3 if cli.returncode == 0 else None
        if cli.returncode == 0:
            revert_bundle(str(bundle), t.pid, timeout=30)
    med = statistics.median
    return {
        "mode": mode,
        "threads": threads,
        "cycles": cycles,
        "failures": failures,
        "floor_pause_us": {"median": fl["median"], "p99": fl["p99"]},
        "floor_fifo_pause_us": {"median": fl_fifo["median"], "p99": fl_fifo["p99"]},
        "pause_us": {"median": med(pauses), "p99": pct(pauses, 0.99), "n": len(pauses)}
        if pauses
        else None,
        "looks_per_apply": {"median": med(looks), "max": max(looks)} if looks else None,
        "wait_ms": {"median": med(waits), "max": max(waits)} if waits else None,
        "apply_ms": {
            "median": med(totals),
            "load": med(loads),
            "probe_setup": med(setups),
            "probe_detach": med(detaches),
        }
        if totals
        else None,
        "cli_apply_ms": cli_ms,
    }


def per_call(bins: dict[str, Path], bundle: Path, batches: int = 8) -> dict:
    """ns per call of work() in one thread, before and after the patch (same process)."""

    def read(t: Target, n: int) -> list[float]:
        out = []
        while len(out) < n:
            ln = t.readline(30)
            if ln.startswith("{"):
                out.append(json.loads(ln)["ns_per_call"])
        return out

    with Target(bins["target"], "percall", 1, ["2000000", "50"]) as t:
        before = read(t, batches)
        apply_bundle(str(bundle), t.pid, timeout=30)
        read(t, 2)  # a batch may straddle the apply
        after = read(t, batches)
    b, a = statistics.median(before), statistics.median(after)
    return {"unpatched_ns": b, "patched_ns": a, "overhead_ns": a - b, "batches": batches}


def table(rows: list[dict], pc: dict) -> str:
    out = [
        "| mode | threads | floor pause p50/p99 | floor (FIFO) p50/p99 | opus pause p50/p99 | "
        "looks | wait p50 | apply p50 (load / probes+ / probes-) | cli apply |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, f, ff = r["pause_us"], r["floor_pause_us"], r["floor_fifo_pause_us"]
        a = r["apply_ms"]
        out.append(
            f"| {r['mode']} | {r['threads']} | {fmt_us(f['median'])} / {fmt_us(f['p99'])} | "
            f"{fmt_us(ff['median'])} / {fmt_us(ff['p99'])} | "
            + (
                f"{fmt_us(p['median'])} / {fmt_us(p['p99'])} | {r['looks_per_apply']['median']:g} "
                f"(max {r['looks_per_apply']['max']}) | {r['wait_ms']['median']:.1f} ms | "
                f"{a['median']:.0f} ms ({a['load']:.1f} / {a['probe_setup']:.0f} / "
                f"{a['probe_detach']:.0f}) | "
                if p
                else "failed | - | - | - | "
            )
            + (f"{r['cli_apply_ms']:.0f} ms |" if r["cli_apply_ms"] else "- |")
        )
    out.append("")
    out.append(
        f"per call of work(): unpatched {pc['unpatched_ns']:.2f} ns, patched "
        f"{pc['patched_ns']:.2f} ns, overhead {pc['overhead_ns']:+.2f} ns (one jmp rel32)"
    )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--modes", nargs="+", default=["spin", "paced"])
    ap.add_argument("--cycles", type=int, default=10, help="apply+revert cycles per shape")
    ap.add_argument("--floor-rounds", type=int, default=100)
    args = ap.parse_args()
    bins = build()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(bins["target"], Path(tmp) / "work.opus")
        rows = []
        for mode in args.modes:
            for n in args.threads:
                print(f"shape {mode} x {n} ...", file=sys.stderr)
                rows.append(run_shape(bins, bundle, mode, n, args.cycles, args.floor_rounds))
        pc = per_call(bins, bundle)
    result = {"machine": machine(), "shapes": rows, "per_call": pc}
    print(table(rows, pc))
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"apply-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(
        json.dumps(result, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
