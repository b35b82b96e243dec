"""Debian's installed libevent (a shared library mapped by several processes), fixed live.

1. libevent-2.1-7 ``2.1.12-stable-8`` (bookworm) installed, with libevent-dev at the same
   version to compile ``data/evhttp_server.c`` against it; three server processes on
   127.0.0.1 map ``/usr/lib/x86_64-linux-gnu/libevent-2.1.so.7``.
2. ``opus-bpf pending --pid ...`` for the three: the 8 patches of ``2.1.12-stable-8+deb12u1``.
3. ``opus-bpf build --installed <libevent-2.1.so.7> --debian-patch CVE-2026-63385.patch``:
   ``evhttp_header_is_valid_value`` rejects any header value with CR or LF (before: CR LF
   followed by a space or tab, an obsolete continuation, was accepted: a response header a
   server fills from request data could be folded onto a second line).
4. wrk on two of the servers through: trigger, ``apply --lib``, trigger on all three,
   ``revert --lib``, trigger.

``sudo .venv/bin/python tests/distro/libevent_installed_case.py [--cold]`` prints the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VERSION = "2.1.12-stable-8"
FIX = "CVE-2026-63385.patch"
LIB = "/usr/lib/x86_64-linux-gnu/libevent-2.1.so.7"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OPUS = [sys.executable, "-m", "opus_bpf.cli"]
PACKAGES = ["libevent-2.1-7", "libevent-core-2.1-7", "libevent-extra-2.1-7",
            "libevent-pthreads-2.1-7", "libevent-openssl-2.1-7", "libevent-dev"]


class Unavailable(Exception):
    """The package version cannot be installed here."""


def ensure_installed() -> None:
    """libevent and libevent-dev at VERSION (an older libevent stays what is installed)."""
    have = subprocess.run(["dpkg-query", "-W", "-f", "${Version}\n", *PACKAGES],
                          capture_output=True, text=True).stdout.split()
    if have == [VERSION] * len(PACKAGES):
        return
    p = subprocess.run(["apt-get", "install", "-y", "--allow-downgrades",
                        *(f"{n}={VERSION}" for n in PACKAGES)], capture_output=True, text=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if p.returncode != 0:
        raise Unavailable(f"apt-get install libevent {VERSION} failed: "
                          f"{(p.stdout + p.stderr).strip().splitlines()[-1:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def trigger(port: int) -> dict:
    """A header value with CR LF + space, through evhttp_add_header: accepted or rejected."""
    url = f"http://127.0.0.1:{port}/echo?v=a%0D%0A%20injected"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read().decode()
        folded = r.headers.get("X-Echo")
    return {"reply": body.strip(), "x_echo_header": folded}


def _opus(*args: str, timeout: float = 3600) -> tuple[dict, float]:
    t0 = time.monotonic()
    p = subprocess.run([*OPUS, *args, "--json"], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"opus-bpf {' '.join(args)} failed ({p.returncode}): "
                           f"{p.stderr.strip()[-800:]}")
    return json.loads(p.stdout), time.monotonic() - t0


def _wrk_errors(out: str) -> dict:
    reqs = re.search(r"(\d+) requests in", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(reqs.group(1)) if reqs else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def run_case(work: Path, *, cold: bool = False, seconds: int = 30) -> dict:
    ensure_installed()
    if cold:
        from opus_bpf.distro.sources import version_dir
        shutil.rmtree(version_dir("libevent", VERSION) / "build", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    exe = work / "evhttp_server"
    subprocess.run(["gcc", "-O2", "-g", "-o", str(exe), str(HERE / "data" / "evhttp_server.c"),
                    "-levent"], check=True)
    ports = [_free_port() for _ in range(3)]
    servers = [subprocess.Popen([str(exe), str(p)]) for p in ports]
    fig: dict = {"package": "libevent-2.1-7", "version": VERSION, "fix": FIX, "library": LIB,
                 "processes": [s.pid for s in servers]}
    wrks: list[subprocess.Popen] = []
    try:
        for p in ports:
            _wait_port(p)
        args = [a for s in servers for a in ("--pid", str(s.pid))]
        pend, fig["pending_seconds"] = _opus("pending", *args)
        fig["pending"] = [{"name": p["name"], "verdict": p["verdict"],
                           "functions": p["functions"], "reason": p["reason"][:160]}
                          for u in pend["updates"] if u["source"] == "libevent"
                          for p in u["patches"]]
        bundle = work / "fix.opus"
        built, fig["build_seconds"] = _opus("build", "--installed", LIB, "--debian-patch", FIX,
                                            "-o", str(bundle))
        fig["installed"] = built["installed"]
        fig["functions"] = built["functions_replaced"]
        fig["verdict"] = built["verdict"]
        wrks = [subprocess.Popen(["wrk", "-t1", "-c20", f"-d{seconds}s",
                                  f"http://127.0.0.1:{p}/"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for p in ports[:2]]
        time.sleep(2)
        fig["trigger_unpatched"] = trigger(ports[2])
        app, _ = _opus("apply", str(bundle), "--lib", LIB)
        fig["apply"] = app
        fig["trigger_patched"] = [trigger(p) for p in ports]
        rev, _ = _opus("revert", str(bundle), "--lib", LIB)
        fig["revert"] = rev
        fig["trigger_reverted"] = trigger(ports[2])
        fig["wrk"] = [_wrk_errors(w.communicate(timeout=seconds + 60)[0]) for w in wrks]
        fig["servers_alive"] = all(s.poll() is None for s in servers)
    finally:
        for w in wrks:
            if w.poll() is None:
                w.kill()
        for s in servers:
            s.terminate()
            s.wait(timeout=10)
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_DISTRO_WORK") or tempfile.mkdtemp(prefix="opus-libevent-"))
    print(json.dumps(run_case(work, cold="--cold" in sys.argv), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
