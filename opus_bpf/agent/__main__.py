"""`python -m opus_bpf.agent`: run the agent (the same as `opus-bpf serve`)."""

from __future__ import annotations

import argparse
import logging
import sys

from opus_bpf.agent.core import serve


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The serve options; cli.py can pass its `serve` subparser to share them."""
    p = parser or argparse.ArgumentParser(prog="opus-bpf serve", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:9464",
                   help="host:port for /metrics, /healthz, /status (default %(default)s)")
    p.add_argument("--patch-dir", default="/etc/opus-bpf/patches",
                   help="bundles to keep applied (default %(default)s)")
    p.add_argument("--state-dir", default="/var/lib/opus-bpf",
                   help="where the record of applied patches is kept (default %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for quiescence per apply (default %(default)s)")
    p.add_argument("--rescan-interval", type=float, default=60.0,
                   help="seconds between full /proc scans (default %(default)s)")
    p.add_argument("--exec-delay", type=float, default=0.2,
                   help="seconds after an exec before patching the new process "
                        "(lets the dynamic loader map libc; default %(default)s)")
    p.add_argument("--no-exec-watch", action="store_true",
                   help="do not load the BPF exec watch; rely on periodic scans")
    p.add_argument("--count-calls", action="store_true",
                   help="count calls reaching each patched function with a BPF uprobe "
                        "(~0.3 us per call)")
    p.add_argument("--log-level", default="INFO")
    return p


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point shared by `python -m opus_bpf.agent` and `opus-bpf serve`."""
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(listen=args.listen, patch_dir=args.patch_dir, state_dir=args.state_dir,
                 timeout=args.timeout, rescan_interval=args.rescan_interval,
                 exec_delay=args.exec_delay, exec_watch=not args.no_exec_watch,
                 count_calls=args.count_calls)


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
