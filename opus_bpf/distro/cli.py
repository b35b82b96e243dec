"""Arguments and printing of `opus-bpf build --installed` and `opus-bpf pending` (kept here so
opus_bpf/cli.py only gains a few lines: it calls these)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from opus_bpf.errors import OpusError


def _progress(args: argparse.Namespace):
    t0 = time.monotonic()
    quiet = getattr(args, "quiet", False)

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


def add_installed_arguments(b: argparse.ArgumentParser) -> None:
    """`build --installed PATH [--debian-patch NAME [--from-version VER]]`."""
    b.add_argument(
        "--installed",
        metavar="PATH",
        help="a file a Debian package installed (e.g. /usr/bin/redis-server): rebuild exactly "
        "that package version (cached), prove it is the installed binary, build against PATH",
    )
    b.add_argument(
        "--debian-patch",
        metavar="NAME",
        help="with --installed: the fix is debian/patches/NAME of a newer source version",
    )
    b.add_argument(
        "--from-version",
        metavar="VER",
        help="source version to take --debian-patch from (default: the candidate apt would "
        "install, else the newest source apt can fetch)",
    )


def add_pending_parser(sub: argparse._SubParsersAction) -> None:
    """`pending [--pid PID | --all] [--json] [--apply]`."""
    p = sub.add_parser(
        "pending",
        help="security fixes waiting for running processes (Debian packages), with verdicts",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--pid", type=int, action="append", help="process to look at (repeatable)")
    g.add_argument("--all", action="store_true", help="every process")
    p.add_argument("--json", action="store_true")
    p.add_argument("--apply", action="store_true",
                   help="build and apply the live-applicable fixes to the processes")
    p.add_argument("--timeout", type=float, default=10.0, help="quiescence wait per apply")
    p.add_argument("--no-analysis", action="store_true",
                   help="list the waiting patches only (no rebuild, no verdicts)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def cmd_build_installed(args: argparse.Namespace) -> int:
    """`opus-bpf build --installed`."""
    from opus_bpf.distro.installed import build_installed

    if args.src is not None or args.binary is not None:
        raise OpusError("--installed replaces --src and --binary (the source and binary "
                        "come from the package); drop them")
    if (args.patch is None) == (args.debian_patch is None):
        raise OpusError("--installed needs the fix: exactly one of --patch FILE or "
                        "--debian-patch NAME")
    if getattr(args, "pick", None) is not None:
        raise OpusError("--installed takes one fix: use --debian-patch NAME instead of --pick")
    if args.cflags is not None or args.compile_commands is not None or args.build is not None:
        raise OpusError("--installed takes the compile commands from the package's rebuild; "
                        "drop --cflags/--compile-commands/--build")
    ib = build_installed(
        args.installed, args.output, patch=args.patch, debian_patch_name=args.debian_patch,
        from_version=args.from_version, accept_review=args.accept_review,
        ignore_register_risk=args.ignore_register_risk, progress=_progress(args))
    t = ib.target.to_dict()
    if args.json:
        d = {**ib.result.to_dict(), "verdict": str(ib.report.verdict), "installed": t,
             "patch": ib.patch, "patch_from_version": ib.patch_from}
        print(json.dumps(d, indent=2, default=str))
        return 0
    print(f"installed: {t['path']} ({t['package']} {t['version']}, source {t['source']} "
          f"{t['source_version']})")
    print(f"rebuild: {'cached' if t['rebuild_cached'] else 'built'} "
          f"({t['rebuild_seconds']} s dpkg-buildpackage); {ib.target.comparison.describe()}")
    print(f"debug file: {t['debug_file']}"
          + (" (rebuilt, given the installed build-id)" if t["debug_file_adopted"] else ""))
    if ib.patch_from:
        print(f"fix: {Path(ib.patch).name} from {t['source']} {ib.patch_from}")
    print(ib.result.summary())
    print(f"safety analysis: {ib.report.verdict}")
    return 0


def cmd_pending(args: argparse.Namespace) -> int:
    """`opus-bpf pending`."""
    from opus_bpf.distro.pending import all_pids, pending, table

    say = _progress(args)
    pids = all_pids() if args.all else list(args.pid)
    updates = pending(pids, say, analyse_patches=not args.no_analysis or args.apply)
    applied = _apply_live(updates, args, say) if args.apply else []
    if args.json:
        print(json.dumps({"processes": pids, "updates": [u.to_dict() for u in updates],
                          "applied": applied}, indent=2))
    else:
        print(table(updates))
        for a in applied:
            if a.get("ok"):
                r = a["result"]
                print(f"applied {a['patch']} to process {a['pid']} ({a['file']}): waited "
                      f"{r['wait_seconds'] * 1e6:.0f} µs, paused {r['pause_seconds'] * 1e6:.0f} µs"
                      f"; revert: opus-bpf revert {a['bundle']} --pid {a['pid']}")
            else:
                print(f"not applied {a['patch']} ({a.get('file', '')}"
                      f"{', process ' + str(a['pid']) if a.get('pid') else ''}): {a['error']}")
    return 1 if any(not a.get("ok") for a in applied) else 0


def _apply_live(updates, args: argparse.Namespace, say) -> list[dict]:
    """Build and apply every live-applicable patch to the processes mapping its package's
    files; a file the patch's functions are not in is skipped with the build's reason."""
    from opus_bpf.distro.installed import build_installed
    from opus_bpf.distro.sources import version_dir
    from opus_bpf.runtime.apply import apply_bundle

    out: list[dict] = []
    for u in updates:
        for p in u.patches:
            if p.verdict != "safe":
                continue
            for path, pids in sorted(u.files.items()):
                bundle = version_dir(u.source, u.installed) / "bundles" / \
                    f"{Path(p.name).stem}-{Path(path).name}.opus"
                bundle.parent.mkdir(parents=True, exist_ok=True)
                try:
                    build_installed(path, bundle, debian_patch_name=p.name,
                                    from_version=u.candidate, progress=say)
                except OpusError as e:
                    out.append({"patch": p.name, "file": path, "ok": False,
                                "error": e.message})
                    continue
                for pid in pids:
                    say(f"applying {p.name} to process {pid}")
                    try:
                        res = apply_bundle(str(bundle), pid, timeout=args.timeout)
                        out.append({"patch": p.name, "file": path, "pid": pid, "ok": True,
                                    "bundle": str(bundle), "result": res.to_dict()})
                    except OpusError as e:
                        out.append({"patch": p.name, "file": path, "pid": pid, "ok": False,
                                    "error": e.message})
    return out
