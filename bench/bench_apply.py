#!/usr/bin/env python3
"""opus-bpf apply on the bench targets, against the floor of stopping every thread, same run.

For each shape (threads x mode) it starts bench/target, measures the floor (bench/floor, normal
and SCHED_FIFO policy: opus-bpf raises itself to SCHED_FIFO 1 while it pauses), then applies and
reverts bench/work_fix.diff `--cycles` times through the Python API and reports, per shape:
  apply mode  consistent (one stop of every thread) or per-thread (each thread held alone)
  pause     all threads stopped at once (µs; p50/p99 over applies+reverts); per-thread: 0
            unless the process has a single thread
  longest hold  per-thread: the longest any one thread was held in a run (p50/p99 over runs)
  redirect  per-thread: from the start of the switch until every new call reaches the new code
  retire    per-thread: until no thread holds an old activation
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


TIMEOUT = 30.0  # --timeout of every apply and revert (seconds)


def _cycle(bundle: Path, t: Target, base: str, apply_mode: str, cycles: int) -> dict:
    """Apply + revert `cycles` times in one mode; the figures of each run."""
    runs: list = []
    failures = 0
    for _ in range(cycles):
        try:
            r = apply_bundle(str(bundle), t.pid, timeout=TIMEOUT, mode=apply_mode)
        except Exception as exc:  # noqa: BLE001 - a timeout is a figure too
            failures += 1
            print(f"  apply failed: {getattr(exc, 'message', exc)}", file=sys.stderr)
            continue
        assert t.probe(1) != base, "patched work() is not live"
        for _ in range(5):  # a revert that times out leaves the patch on: try again
            try:
                rv = revert_bundle(str(bundle), t.pid, timeout=TIMEOUT, mode=apply_mode)
                break
            except Exception as exc:  # noqa: BLE001 - a figure too
                failures += 1
                print(f"  revert failed: {getattr(exc, 'message', exc)}", file=sys.stderr)
        else:
            raise SystemExit("the patch could not be reverted; stopping the bench")
        assert t.probe(1) == base
        runs += [r, rv]
    return {"runs": runs, "failures": failures}


def _summary(apply_mode: str, got: dict) -> dict:
    med = statistics.median
    runs = got["runs"]
    applies = runs[0::2]
    out: dict = {"apply_mode": apply_mode, "failures": got["failures"]}
    if not runs:
        return out
    pauses = [r.pause_seconds * 1e6 for r in runs]
    out["pause_us"] = {"median": med(pauses), "p99": pct(pauses, 0.99), "n": len(pauses)}
    out["looks_per_apply"] = {
        "median": med(r.attempts for r in applies),
        "max": max(r.attempts for r in applies),
    }
    out["wait_ms"] = {
        "median": med(r.wait_seconds * 1e3 for r in applies),
        "max": max(r.wait_seconds * 1e3 for r in applies),
    }
    out["apply_ms"] = {
        "median": med(r.total_seconds * 1e3 for r in applies),
        "load": med(r.load_seconds * 1e3 for r in applies),
        "probe_setup": med(r.probe_setup_seconds * 1e3 for r in applies),
        "probe_detach": med(r.probe_detach_seconds * 1e3 for r in applies),
    }
    if apply_mode == "per-thread":
        longest = [r.hold_max_seconds * 1e6 for r in runs]
        holds = [h * 1e6 for r in runs for h in r.holds]
        out["longest_hold_us"] = {"median": med(longest), "p99": pct(longest, 0.99)}
        out["hold_us"] = {"median": med(holds), "p99": pct(holds, 0.99), "n": len(holds)}
        # looks and single-steps of one thread vs remote system calls (handler, load): a
        # remote call waits for the held thread to get a CPU and run the call
        looks = [h * 1e6 for r in runs for h in r.holds if h not in r.remote_holds]
        remote = [h * 1e6 for r in runs for h in r.remote_holds]
        out["look_hold_us"] = {"p99": pct(looks, 0.99), "max": max(looks)} if looks else None
        out["remote_hold_us"] = (
            {"median": med(remote), "p99": pct(remote, 0.99), "max": max(remote)}
            if remote
            else None
        )
        out["redirect_us"] = {"median": med(r.redirect_seconds * 1e6 for r in runs)}
        out["retire_ms"] = {
            "median": med(r.retire_seconds * 1e3 for r in runs),
            "max": max(r.retire_seconds * 1e3 for r in runs),
        }
    return out


def run_shape(
    bins: dict[str, Path],
    bundle: Path,
    mode: str,
    threads: int,
    cycles: int,
    floor_rounds: int,
    apply_modes: list[str],
) -> list[dict]:
    rows = []
    with Target(bins["target"], mode, threads) as t:
        time.sleep(0.3)
        base = t.probe(1)
        fl = floor(bins["floor"], t.pid, floor_rounds, 2000, mode="all")["all"]["pause"]
        fl_fifo = floor(bins["floor"], t.pid, floor_rounds, 2000, mode="all", fifo=True)["all"][
            "pause"
        ]
        for am in apply_modes:
            row = {
                "mode": mode,
                "threads": threads,
                "cycles": cycles,
                "floor_pause_us": {"median": fl["median"], "p99": fl["p99"]},
                "floor_fifo_pause_us": {"median": fl_fifo["median"], "p99": fl_fifo["p99"]},
                **_summary(am, _cycle(bundle, t, base, am, cycles)),
            }
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
                    "--mode",
                    am,
                ],
                capture_output=True,
                text=True,
            )
            row["cli_apply_ms"] = (time.monotonic() - t0) * 1e3 if cli.returncode == 0 else None
            if cli.returncode == 0:
                revert_bundle(str(bundle), t.pid, timeout=30, mode=am)
            rows.append(row)
    return rows


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
        apply_bundle(str(bundle), t.pid, timeout=30, mode="consistent")
        read(t, 2)  # a batch may straddle the apply
        after = read(t, batches)
    b, a = statistics.median(before), statistics.median(after)
    return {"unpatched_ns": b, "patched_ns": a, "overhead_ns": a - b, "batches": batches}


def table(rows: list[dict], pc: dict) -> str:
    out = [
        "| shape | threads | apply mode | floor stop-all p50/p99 | floor (FIFO) p50/p99 | "
        "whole-process pause p50/p99 | longest hold of one thread p50/p99 | "
        "look holds p99/max | remote-call holds p50/max | "
        "redirect | retire / wait p50 | looks | apply p50 | cli apply |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, ff = r["floor_pause_us"], r["floor_fifo_pause_us"]
        head = (
            f"| {r['mode']} | {r['threads']} | {r['apply_mode']} | "
            f"{fmt_us(f['median'])} / {fmt_us(f['p99'])} | "
            f"{fmt_us(ff['median'])} / {fmt_us(ff['p99'])} | "
        )
        p = r.get("pause_us")
        if not p:
            out.append(head + "failed (timed out, untouched) | - | - | - | - | - | - | - | - |")
            continue
        lh, lk, rm = r.get("longest_hold_us"), r.get("look_hold_us"), r.get("remote_hold_us")
        wait = (
            f"{r['retire_ms']['median']:.1f} ms"
            if "retire_ms" in r
            else f"{r['wait_ms']['median']:.1f} ms"
        )
        out.append(
            head
            + f"{fmt_us(p['median'])} / {fmt_us(p['p99'])} | "
            + (f"{fmt_us(lh['median'])} / {fmt_us(lh['p99'])} | " if lh else "= pause | ")
            + (f"{fmt_us(lk['p99'])} / {fmt_us(lk['max'])} | " if lk else "- | ")
            + (f"{fmt_us(rm['median'])} / {fmt_us(rm['max'])} | " if rm else "- | ")
            + (f"{fmt_us(r['redirect_us']['median'])} | " if "redirect_us" in r else "in pause | ")
            + f"{wait} | {r['looks_per_apply']['median']:g} | {r['apply_ms']['median']:.0f} ms | "
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
    ap.add_argument("--timeout", type=float, default=30.0, help="apply/revert --timeout")
    ap.add_argument(
        "--apply-modes", nargs="+", default=["consistent", "per-thread"], help="opus-bpf --mode"
    )
    args = ap.parse_args()
    global TIMEOUT
    TIMEOUT = args.timeout
    bins = build()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(bins["target"], Path(tmp) / "work.opus")
        rows = []
        for mode in args.modes:
            for n in args.threads:
                print(f"shape {mode} x {n} ...", file=sys.stderr)
                rows += run_shape(
                    bins, bundle, mode, n, args.cycles, args.floor_rounds, args.apply_modes
                )
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
