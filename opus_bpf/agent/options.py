"""The `serve` options, shared by `python -m opus_bpf.agent` and `opus-bpf serve` (cli.py)."""

from __future__ import annotations

import argparse
import logging


def add_serve_arguments(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The serve options; cli.py can pass its `serve` subparser to share them."""
    p = parser or argparse.ArgumentParser(
        prog="opus-bpf serve",
        description="Keep the bundles in a patch directory applied to every matching process "
                    "on this host and serve Prometheus metrics.",
    )
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


def run(args: argparse.Namespace) -> int:
    """Entry point shared by `python -m opus_bpf.agent` and `opus-bpf serve`."""
    from opus_bpf.agent.core import serve  # noqa: PLC0415 - keep `opus-bpf --help` fast

    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(listen=args.listen, patch_dir=args.patch_dir, state_dir=args.state_dir,
                     timeout=args.timeout, rescan_interval=args.rescan_interval,
                     exec_delay=args.exec_delay, exec_watch=not args.no_exec_watch,
                     count_calls=args.count_calls)
    except OSError as exc:  # e.g. the listen port is taken: one line, not a traceback
        logging.getLogger("opus_bpf.agent").error("cannot start: %s", exc)
        return 2


def add_publish_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--pushgateway` / `--metrics-textfile` for one-shot commands (apply, revert)."""
    parser.add_argument("--pushgateway", metavar="HOST:PORT",
                        help="push this run's metrics to a Prometheus Pushgateway")
    parser.add_argument("--metrics-textfile", metavar="PATH",
                        help="write this run's metrics for node_exporter's textfile collector")
    return parser
