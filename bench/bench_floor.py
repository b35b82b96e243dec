#!/usr/bin/env python3
"""The floor of stopping every thread on this machine, for the shapes opus-bpf is judged on.

For each shape (threads x mode: spin = work() in a tight loop, paced = work() then 1 ms sleep) it
starts bench/target, runs bench/floor against it `--runs` times (`--rounds` stops each) and
reports, in µs:
  pause      first PTRACE_INTERRUPT -> last PTRACE_CONT (all threads, main included, stopped)
  stop       first interrupt -> last stop seen
  serial     one thread at a time: held = its stop -> its resume (a per-thread design's floor),
             catch = its interrupt -> its resume (includes waiting for the thread to get a CPU)
each with the tracer at the normal policy (as opus-bpf runs) and as SCHED_FIFO (a tracer that
raises its priority for the pause: resumed threads cannot preempt it between two PTRACE_CONTs).
Prints a table, then the JSON (also saved under bench/results/). Needs root (ptrace).

  .venv/bin/python bench/bench_floor.py                       # 1, 16, 64 threads, spin + paced
  .venv/bin/python bench/bench_floor.py --threads 16 --modes paced --runs 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RESULTS, Target, build, floor, fmt_us, machine  # noqa: E402


def run_shape(bins: dict[str, Path], mode: str, threads: int, args: argparse.Namespace
              ) -> list[dict]:
    """Measure one shape: `runs` floor runs per policy against one target, interleaved."""
    policies = args.policies.split(",")
    per_run: dict[str, list[dict]] = {p: [] for p in policies}
    with Target(bins["target"], mode, threads) as t:
        time.sleep(args.settle)
        for _ in range(args.runs):
            for policy in policies:
                per_run[policy].append(floor(bins["floor"], t.pid, args.rounds, args.gap_us,
                                             samples=True, serial_rounds=args.serial_rounds,
                                             fifo=policy == "fifo"))
        calls = t.calls()
    out = []
    for policy, runs in per_run.items():
        pooled = sorted(s for r in runs for s in r["all"].pop("pause_samples"))
        out.append({
            "mode": mode,
            "threads": threads,
            "tasks": runs[0]["threads"],
            "policy": policy,
            "rounds": args.rounds,
            "runs": runs,
            "pooled_pause": {"median": statistics.median(pooled),
                             "p99": nearest_rank(pooled, 0.99), "max": pooled[-1],
                             "n": len(pooled)},
            "work_calls": calls,
        })
    return out


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The q quantile by nearest rank."""
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def span(values: list[float]) -> str:
    """A range of figures as "a" or "a–b"."""
    lo, hi = fmt_us(min(values)), fmt_us(max(values))
    return lo if lo == hi else f"{lo} – {hi}"


def table(shapes: list[dict]) -> str:
    """A Markdown table: one row per shape, ranges across runs."""
    rows = ["| shape | tasks | tracer | pause median | pause p99 | stop median "
            "| serial held median | serial held p99 | serial catch median |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        runs = s["runs"]

        def col(kind: str, stat: str, runs: list[dict] = runs) -> str:
            if kind in ("held_per_thread", "catch_per_thread"):
                return span([r["serial"][kind][stat] for r in runs])
            return span([r["all"][kind][stat] for r in runs])

        rows.append(f"| {s['threads']} {s['mode']} | {s['tasks']} | {s['policy']} | "
                    f"{col('pause', 'median')} | "
                    f"{col('pause', 'p99')} | {col('stop', 'median')} | "
                    f"{col('held_per_thread', 'median')} | {col('held_per_thread', 'p99')} | "
                    f"{col('catch_per_thread', 'median')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure every shape, print the table and the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,16,64", help="worker counts (default 1,16,64)")
    ap.add_argument("--modes", default="spin,paced", help="target modes (default spin,paced)")
    ap.add_argument("--rounds", type=int, default=100, help="stops per run (default 100)")
    ap.add_argument("--runs", type=int, default=2, help="floor runs per shape (default 2)")
    ap.add_argument("--policies", default="normal,fifo",
                    help="tracer scheduling: normal (like opus-bpf), fifo (SCHED_FIFO tracer)")
    ap.add_argument("--serial-rounds", type=int, default=10,
                    help="one-thread-at-a-time rounds per run (default 10)")
    ap.add_argument("--gap-us", type=int, default=10000, help="gap between stops (default 10 ms)")
    ap.add_argument("--settle", type=float, default=0.2, help="seconds between start and floor")
    ap.add_argument("-o", "--output", type=Path, help="JSON file (default bench/results/...)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_floor: needs root (ptrace every thread of the target)", file=sys.stderr)
        return 2

    bins = build()
    shapes = []
    for mode in args.modes.split(","):
        for threads in (int(x) for x in args.threads.split(",")):
            print(f"measuring {threads} {mode} ...", file=sys.stderr, flush=True)
            shapes.extend(run_shape(bins, mode, threads, args))
    result = {"bench": "floor", "machine": machine(), "rounds": args.rounds, "runs": args.runs,
              "serial_rounds": args.serial_rounds, "policies": args.policies.split(","),
              "gap_us": args.gap_us, "unit": "us", "shapes": shapes}
    out = args.output or RESULTS / f"floor-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    print(table(shapes))
    print(f"(tasks = workers + main thread; ranges over {args.runs} runs of {args.rounds} stops; "
          f"{result['machine']['cpus']} CPUs, kernel {result['machine']['kernel']}; "
          f"JSON in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
