"""`opus-bpf`: parse arguments, call one module, print text or JSON. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from opus_bpf.agent.options import add_publish_arguments, add_serve_arguments
from opus_bpf.distro.cli import add_installed_arguments, add_pending_parser
from opus_bpf.errors import OpusError

EXAMPLES = """examples:
  opus-bpf build --src ./srv --patch fix.diff --binary ./srv/server --cflags '-O2 -g' -o fix.opus
  opus-bpf build --src ./redis --patch fix.diff --binary ./redis/src/redis-server \\
                 --build 'make -j2' -o fix.opus      # flags captured from the program's build
  opus-bpf apply fix.opus --pid 1234          # wait up to 10 s for a quiescent moment, then patch
  opus-bpf status --pid 1234 --json
  opus-bpf revert fix.opus --pid 1234
  opus-bpf analyze --src ./server --patch fix.diff --sarif fix.sarif
"""


def _targets(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--pid", type=int, action="append", help="target process (repeatable)")
    g.add_argument("--exe", help="every process running this executable (bundle's build-id)")
    g.add_argument("--lib", help="every process mapping this library (bundle's build-id)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="opus-bpf",
        description="Live-patch running C programs (OPUS with BPF and ptrace).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="build a patch bundle from a source diff")
    b.add_argument("--src", type=Path, help="source tree the binary was built from")
    b.add_argument("--patch", type=Path, help="unified diff (the fix)")
    b.add_argument(
        "--pick",
        metavar="NAME",
        help="--patch is a quilt series (debian/patches/series): build its patch NAME against "
        "--src as the series leaves it just before NAME (patches before it applied, NAME and "
        "later ones reverted when --src has them)",
    )
    b.add_argument("--binary", type=Path, help="the binary to patch (as built)")
    add_installed_arguments(b)
    g = b.add_mutually_exclusive_group()
    g.add_argument("--compile-commands", type=Path, help="compile_commands.json of the build")
    g.add_argument("--cflags", default=None, help="flags the program was compiled with")
    g.add_argument(
        "--build",
        default=None,
        metavar="CMD",
        help="the program's build command (e.g. 'make -j2'): run once in a copy of --src under "
        "a compiler wrapper to capture compile_commands.json (the tree's own is reused)",
    )
    b.add_argument(
        "--accept-review", action="store_true", help="build even if analysis says review"
    )
    b.add_argument(
        "--ignore-register-risk",
        action="store_true",
        help="build even if a new function writes registers gcc -fipa-ra callers may keep",
    )
    b.add_argument("-o", "--output", required=True, type=Path, help="bundle to write (.opus)")
    b.add_argument("--json", action="store_true")

    a = sub.add_parser("apply", help="apply a bundle to running processes")
    a.add_argument("bundle", help="bundle file (.opus)")
    _targets(a)
    a.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for quiescence")
    _mode(a)
    a.add_argument("--json", action="store_true")

    r = sub.add_parser("revert", help="revert an applied patch")
    r.add_argument("patch", help="bundle file, patch id or patch name")
    _targets(r)
    r.add_argument("--timeout", type=float, default=10.0)
    _mode(r)
    r.add_argument("--json", action="store_true")

    add_publish_arguments(a)
    add_publish_arguments(r)

    v = sub.add_parser(
        "serve", help="agent: keep a patch directory applied on this host, serve /metrics"
    )
    add_serve_arguments(v)

    s = sub.add_parser("status", help="patches applied to a process, read from the process")
    s.add_argument("--pid", required=True, type=int)
    s.add_argument("--json", action="store_true")

    add_pending_parser(sub)

    z = sub.add_parser("analyze", help="OPUS safety analysis of a source patch")
    z.add_argument("--src", required=True, type=Path)
    z.add_argument("--patch", required=True, type=Path)
    zg = z.add_mutually_exclusive_group()
    zg.add_argument("--compile-commands", type=Path)
    zg.add_argument("--cflags", default=None)
    z.add_argument("--json", action="store_true")
    z.add_argument("--sarif", type=Path, help="write SARIF 2.1.0 to this file")
    return p


def _mode(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=("auto", "per-thread", "consistent"),
        default="auto",
        help="per-thread: new calls switch at once, each thread is held alone (default when the "
        "analysis found every function safe); consistent: one stop of the whole process at a "
        "moment no thread is inside (default otherwise; revert: the mode it was applied with)",
    )


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def _print_result(res: object, as_json: bool) -> None:
    d = res.to_dict()  # type: ignore[attr-defined]
    if as_json:
        print(json.dumps(d, indent=2))
        return
    verb = "applied" if d["operation"] == "apply" else "reverted"
    print(f"{verb} {d['name']} ({d['bundle_id']}) in process {d['pid']}")
    for f in d["functions"]:
        arrow = "->" if d["operation"] == "apply" else "<-"
        print(f"  {f['name']}: {f['old_address']} {arrow} {f['new_address']} ({f['jump']})")
    if d.get("mode") == "per-thread":
        print(
            f"  per-thread: new calls redirected after {_us(d['redirect_seconds'])}; old "
            f"activations retired after {_us(d['retire_seconds'])} ({d['busy_threads']} busy "
            f"thread(s), {d['attempts']} look(s)); longest hold "
            f"of one thread {_us(d['hold_max_seconds'])}; whole process paused "
            f"{_us(d['pause_seconds'])}; total {_us(d['total_seconds'])}"
        )
        return
    print(
        f"  waited {_us(d['wait_seconds'])} for quiescence in {d['attempts']} look(s); "
        f"paused {_us(d['pause_seconds'])} with all threads stopped; "
        f"{d['probe_hits']} probe hits; total {_us(d['total_seconds'])}"
    )


def _cmd_build(args: argparse.Namespace) -> int:
    import shutil

    from opus_bpf.patchbuild.capture import capture_compile_commands
    from opus_bpf.patchbuild.gate import build_checked
    from opus_bpf.patchbuild.quilt import looks_like_series, pick_from_series

    if args.installed is not None:
        from opus_bpf.distro.cli import cmd_build_installed

        return cmd_build_installed(args)
    if args.src is None or args.patch is None or args.binary is None:
        raise OpusError("build needs --src, --patch and --binary (or --installed PATH)")
    series = None
    if args.pick is not None or looks_like_series(args.patch):
        # the "before" tree of one patch of a quilt series, in a temporary copy
        series = pick_from_series(args.src, args.patch, args.pick, args.compile_commands)
        args.src, args.patch = series.src, series.patch
        args.compile_commands = series.compile_commands
        if not args.json:
            print(f"series: {args.pick} against --src with "
                  f"{', '.join(series.steps) or 'the tree as it is'}")
    compile_commands, capture = args.compile_commands, None
    try:
        if args.build is not None:
            capture = capture_compile_commands(args.src, args.build)
            compile_commands = capture.path
            if not args.json:
                how = (
                    f"captured from `{args.build}` in {capture.seconds:.1f} s"
                    if capture.captured
                    else "reused"
                )
                print(f"compile commands: {capture.entries} files, {how} ({capture.path})")
        res, report = build_checked(
            args.src,
            args.patch,
            args.binary,
            args.output,
            cflags=shlex.split(args.cflags) if args.cflags is not None else None,
            compile_commands=compile_commands,
            accept_review=args.accept_review,
            ignore_register_risk=args.ignore_register_risk,
        )
    finally:
        if capture is not None and capture.workdir is not None:
            shutil.rmtree(capture.workdir, ignore_errors=True)
        if series is not None:
            series.close()
    if args.json:
        d = {**res.to_dict(), "verdict": str(report.verdict)}
        if series is not None:
            d["series"] = {"pick": args.pick, "steps": series.steps}
        if capture is not None:
            d["compile_commands"] = {
                "captured": capture.captured,
                "entries": capture.entries,
                "capture_seconds": capture.seconds,
            }
        print(json.dumps(d, indent=2, default=str))
    else:
        print(res.summary())
        print(f"safety analysis: {report.verdict}")
    return 0


def _pids(args: argparse.Namespace, bundle_arg: str) -> list[int]:
    if args.pid:
        return args.pid
    from opus_bpf.runtime.apply import target_pids

    return target_pids(bundle_arg, exe=args.exe, lib=args.lib)


def _run_many(args: argparse.Namespace, op: str) -> int:
    """One pid: its result or its one-line error. Several: a line (or JSON object) per process."""
    from opus_bpf.runtime.apply import apply_bundle, revert_bundle

    what = args.bundle if op == "apply" else args.patch
    runtime_fn = apply_bundle if op == "apply" else revert_bundle

    def fn(bundle: str, pid: int, timeout: float) -> object:
        return _observed(
            args, op, lambda: runtime_fn(bundle, pid, timeout=timeout, mode=args.mode)
        )

    pids = _pids(args, what)
    if len(pids) == 1 and args.pid:
        _print_result(fn(what, pids[0], timeout=args.timeout), args.json)
        return 0
    results, failed = [], 0
    for pid in pids:
        try:
            res = fn(what, pid, timeout=args.timeout)
            results.append({"pid": pid, "ok": True, "result": res.to_dict()})
            if not args.json:
                _print_result(res, False)
        except OpusError as exc:
            failed += 1
            results.append({"pid": pid, "ok": False, "error": exc.message})
            if not args.json:
                print(f"process {pid}: FAILED: {exc.message}")
    if args.json:
        print(json.dumps({"processes": results, "failed": failed}, indent=2))
    else:
        print(
            f"{op}: {len(pids) - failed} of {len(pids)} processes done"
            + (f", {failed} failed (left unchanged)" if failed else "")
        )
    return 1 if failed or not pids else 0


def _observed(args: argparse.Namespace, operation: str, fn: object) -> object:
    """Run one apply/revert, record its metrics, and push them where asked (one-shot runs)."""
    from opus_bpf import metrics

    try:
        return metrics.run_observed(operation, fn)  # type: ignore[arg-type]
    finally:
        for problem in metrics.publish(args.pushgateway, args.metrics_textfile):
            print(f"opus-bpf {args.cmd}: warning: {problem}", file=sys.stderr)


def _cmd_serve(args: argparse.Namespace) -> int:
    from opus_bpf.agent.options import run

    return run(args)


def _cmd_apply(args: argparse.Namespace) -> int:
    return _run_many(args, "apply")


def _cmd_revert(args: argparse.Namespace) -> int:
    return _run_many(args, "revert")


def _cmd_status(args: argparse.Namespace) -> int:
    from opus_bpf.runtime.status import process_status

    patches = process_status(args.pid)
    if args.json:
        print(json.dumps({"pid": args.pid, "patches": [p.to_dict() for p in patches]}, indent=2))
        return 0 if all(p.entry_ok for p in patches) else 1
    if not patches:
        print(f"process {args.pid}: no opus-bpf patches")
    for p in patches:
        flag = "" if p.entry_ok else "  !! entry bytes are not what the patch wrote"
        print(f"{p.name} ({p.id}) {p.state}{flag}")
        for f in p.functions:
            print(f"  {f.name}: {f.old_address:#x} -> {f.new_address:#x} {f.state}")
    return 0 if all(p.entry_ok for p in patches) else 1


def _cmd_analyze(args: argparse.Namespace) -> int:
    from opus_bpf import analysis

    report = analysis.analyze_tree(
        args.src,
        args.patch,
        cflags=shlex.split(args.cflags) if args.cflags is not None else None,
        compile_commands=args.compile_commands,
    )
    if args.sarif:
        args.sarif.write_text(json.dumps(report.to_sarif(), indent=2))
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return analysis.exit_code(report)


def _cmd_pending(args: argparse.Namespace) -> int:
    from opus_bpf.distro.cli import cmd_pending

    return cmd_pending(args)


COMMANDS = {
    "build": _cmd_build,
    "apply": _cmd_apply,
    "revert": _cmd_revert,
    "status": _cmd_status,
    "analyze": _cmd_analyze,
    "serve": _cmd_serve,
    "pending": _cmd_pending,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except OpusError as exc:
        print(f"opus-bpf {args.cmd}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"opus-bpf {args.cmd}: interrupted; nothing was left half-done", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - errors from other layers that carry a message
        msg = getattr(exc, "message", None)
        if msg:
            print(f"opus-bpf {args.cmd}: {msg}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
