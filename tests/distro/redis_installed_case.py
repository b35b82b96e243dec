"""Debian's own installed redis-server, fixed live from a newer security update's debian/patches.

The acceptance case of `build --installed` and `pending`, with real processes only:

1. redis-server/redis-tools ``5:7.0.15-1~deb12u7`` installed by apt (service start blocked by
   a policy-rc.d returning 101 when there is none); ``/usr/bin/redis-server`` (a link to the
   stripped ``redis-check-rdb`` of redis-tools) runs on 127.0.0.1 with requirepass.
2. ``opus-bpf pending --pid PID --json``: what the candidate (deb12u10) fixes that the
   installed version lacks, with the safety verdicts.
3. ``opus-bpf build --installed /usr/bin/redis-server --debian-patch CVE-2026-25243.patch``:
   the installed version rebuilt with dpkg-buildpackage under the compile-command capture
   (cached), proven against the installed file, the fix from deb12u10 built on top.
4. redis-benchmark (authenticated, 50 clients, SET/GET, ``-e``: exits non-zero on any error
   reply) runs through: trigger, apply, trigger, revert, trigger.
5. The trigger (tests/unit + corrupt-dump.tcl of the fix): RESTORE of a hash zipmap whose field
   length 1 is encoded in 5 bytes. Unpatched: ``+OK`` and a hash of garbage fields; patched:
   ``-ERR Bad data format``.

``sudo .venv/bin/python tests/distro/redis_installed_case.py [--cold]`` prints the figures
as JSON (``--cold`` removes the cached rebuild first).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "5:7.0.15-1~deb12u7"
FIX = "CVE-2026-25243.patch"
PASSWORD = "opus-bpf-test"
EXE = "/usr/bin/redis-server"
REPO = Path(__file__).resolve().parents[2]
OPUS = [sys.executable, "-m", "opus_bpf.cli"]
# RESTORE payload of the fix's test "zipmap - 5 bytes length encoding for a small field"
ZIPMAP_5_BYTE_FIELD = (b"\x09\x11\x01\xfe\x04\x00\x00\x00\x01\x00\xff\x00\x04\x00\x76\x61\x6c"
                       b"\x31\xff\x09\x00\xf9\xd5\xa4\xf7\x7d\x00\x3f\x1b")


class Unavailable(Exception):
    """The package version or its sources cannot be had on this machine."""


def installed_version(pkg: str) -> str | None:
    p = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                       text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def ensure_installed(version: str = VERSION) -> None:
    """redis-server and redis-tools at *version*, without starting the service."""
    if installed_version("redis-server") == version and installed_version("redis-tools") == version:
        return
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        p = subprocess.run(["apt-get", "install", "-y", "--allow-downgrades",
                            f"redis-server={version}", f"redis-tools={version}"],
                           capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    finally:
        if ours:
            policy.unlink()
    if p.returncode != 0:
        raise Unavailable(f"apt-get install redis-server={version} failed: "
                          f"{(p.stdout + p.stderr).strip().splitlines()[-1:]}")


def _resp(*args: object) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def _exchange(port: int, payload: bytes, expect_replies: int) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(payload)
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"\r\n") < expect_replies and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        time.sleep(0.05)
    s.close()
    return data


def trigger(port: int) -> dict:
    """RESTORE the malformed zipmap; what the server answered and what the key holds."""
    data = _exchange(port, _resp("AUTH", PASSWORD) + _resp("DEL", "opus:zm")
                     + _resp("RESTORE", "opus:zm", 0, ZIPMAP_5_BYTE_FIELD)
                     + _resp("HLEN", "opus:zm"), 4)
    lines = data.split(b"\r\n")
    restore = lines[2].decode(errors="replace") if len(lines) > 2 else "?"
    return {"restore_reply": restore, "accepted": restore == "+OK",
            "hlen_reply": lines[3].decode(errors="replace") if len(lines) > 3 else "?"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"redis-server did not listen on {port}")


def _opus(*args: str, timeout: float = 3600) -> tuple[dict, float, str]:
    t0 = time.monotonic()
    p = subprocess.run([*OPUS, *args, "--json"], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"opus-bpf {' '.join(args)} failed ({p.returncode}): "
                           f"{p.stderr.strip()[-800:]}")
    return json.loads(p.stdout), secs, p.stderr


def _info(port: int, field: str) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "-a", PASSWORD, "--no-auth-warning",
                          "info", "stats"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":")[1])
    return -1


def run_case(work: Path, *, requests: int = 2_000_000, cold: bool = False,
             fix: str = FIX) -> dict:
    """The whole case; returns the figures (raises on any failure)."""
    ensure_installed()
    if cold:
        from opus_bpf.distro.sources import version_dir
        shutil.rmtree(version_dir("redis", VERSION) / "build", ignore_errors=True)
    fig: dict = {"package": "redis-server/redis-tools", "version": VERSION, "fix": fix,
                 "executable": os.path.realpath(EXE)}
    port = _free_port()
    work.mkdir(parents=True, exist_ok=True)
    srv = subprocess.Popen([EXE, "--bind", "127.0.0.1", "--port", str(port), "--requirepass",
                            PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(work),
                            "--daemonize", "no", "--logfile", str(work / "redis.log")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench = None
    try:
        _wait_port(port)
        pend, fig["pending_seconds"], _ = _opus("pending", "--pid", str(srv.pid))
        ups = [u for u in pend["updates"] if u["source"] == "redis"]
        fig["pending"] = [{"name": p["name"], "verdict": p["verdict"], "meaning": p["meaning"],
                           "functions": p["functions"], "reason": p["reason"][:200]}
                          for u in ups for p in u["patches"]]
        fig["candidate"] = ups[0]["candidate"] if ups else None
        bundle = work / "fix.opus"
        built, fig["build_seconds"], _ = _opus("build", "--installed", EXE, "--debian-patch",
                                               fix, "-o", str(bundle))
        fig["installed"] = built["installed"]
        fig["functions"] = built["functions_replaced"]
        fig["verdict"] = built["verdict"]
        conns0 = _info(port, "total_connections_received")
        bench = subprocess.Popen(["redis-benchmark", "-p", str(port), "-a", PASSWORD, "-c", "50",
                                  "-n", str(requests), "-r", "100000", "-t", "set,get", "-e",
                                  "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        time.sleep(2)
        fig["trigger_unpatched"] = trigger(port)
        app, _, _ = _opus("apply", str(bundle), "--pid", str(srv.pid))
        fig["apply"] = app
        time.sleep(0.5)
        fig["trigger_patched"] = trigger(port)
        rev, _, _ = _opus("revert", str(bundle), "--pid", str(srv.pid))
        fig["revert"] = rev
        fig["trigger_reverted"] = trigger(port)
        out, _ = bench.communicate(timeout=900)
        fig["benchmark_exit"] = bench.returncode
        fig["benchmark"] = [ln.strip() for ln in out.replace("\r", "\n").splitlines()
                            if "requests per second" in ln]
        fig["benchmark_requests"] = 2 * requests
        fig["connections"] = _info(port, "total_connections_received") - conns0
        fig["server_alive"] = srv.poll() is None
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        srv.terminate()
        srv.wait(timeout=20)
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_DISTRO_WORK") or tempfile.mkdtemp(prefix="opus-distro-"))
    fig = run_case(work, cold="--cold" in sys.argv)
    print(json.dumps(fig, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
