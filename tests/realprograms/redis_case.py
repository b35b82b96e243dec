"""redis 7.0.15 from Debian 12's source package, CVE-2025-21605 fixed live under redis-benchmark.

The case, end to end, with real processes only:

1. ``apt-get source redis`` (bookworm-security); the tree as Debian shipped it before the fix:
   upstream 7.0.15 plus debian/patches up to, not including,
   ``0001-Limiting-output-buffer-for-unauthenticated-client-CV.patch`` (CVE-2025-21605:
   an unauthenticated client that sends commands and never reads the ``-NOAUTH`` replies makes
   the server buffer output without limit).
2. Build it as debian/rules does: dpkg-buildflags with hardening=+all, then dh_auto_build's
   ``make V=1 USE_SYSTEM_JEMALLOC=yes USE_SYSTEMD=yes USE_JEMALLOC=yes`` (BUILD_TLS=yes).
3. ``opus-bpf build --build <that build>``: compile commands captured from the program's own
   build in a copy, the Debian patch itself as the fix.
4. redis-server on 127.0.0.1 with ``requirepass``; redis-benchmark (authenticated, 50 clients)
   runs through apply, the trigger and revert; it exits 1 on any error reply or lost connection.
5. The trigger: an unauthenticated client pipelines 20,000 commands and does not read. Before
   the fix all 20,000 ``-NOAUTH`` replies are buffered and delivered and the connection stays;
   with the fix applied the server closes it after a few hundred.

Run it directly for the figures: ``sudo .venv/bin/python tests/realprograms/redis_case.py
[--fast]`` (``OPUS_REDIS_WORK=DIR`` keeps the trees there).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

FIX = "0001-Limiting-output-buffer-for-unauthenticated-client-CV.patch"
PASSWORD = "opus-bpf-test"
TRIGGER_COMMANDS = 20_000
BUILD_DEPS = ["libjemalloc-dev", "liblzf-dev", "libsystemd-dev", "libssl-dev", "pkg-config"]

DEBIAN_MAKE = """#!/bin/sh
# redis as debian/rules builds it: dpkg-buildflags (hardening=+all) + dh_auto_build's make line
set -e
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
export DEB_CFLAGS_MAINT_APPEND=-I/usr/include/liblzf
export DEB_LDFLAGS_MAINT_APPEND="-Wl,-no-as-needed -ldl -latomic -llzf"
eval "$(dpkg-buildflags --export=sh)"
export BUILD_TLS=yes
exec make -j"$(nproc)" V=1 USE_SYSTEM_JEMALLOC=yes USE_SYSTEMD=yes USE_JEMALLOC=yes "$@"
"""

REPO = Path(__file__).resolve().parents[2]
OPUS = [sys.executable, "-m", "opus_bpf.cli"]


class Unavailable(Exception):
    """The source package or its build dependencies cannot be downloaded here."""


@dataclass
class Figures:
    program: str = "redis-server 7.0.15 (Debian 5:7.0.15-1~deb12u10 source)"
    fix: str = "CVE-2025-21605 (debian/patches/" + FIX + ")"
    functions_replaced: list[str] = field(default_factory=list)
    program_build_seconds: float = 0.0
    capture_seconds: float = 0.0
    opus_build_seconds: float = 0.0
    patch_compile_seconds: float = 0.0
    apply_wait_us: float = 0.0
    apply_pause_us: float = 0.0
    apply_attempts: int = 0
    revert_wait_us: float = 0.0
    revert_pause_us: float = 0.0
    benchmark_requests: int = 0
    benchmark_rc: int = -1
    failed_requests: int = -1
    trigger_before: dict = field(default_factory=dict)
    trigger_patched: dict = field(default_factory=dict)
    trigger_reverted: dict = field(default_factory=dict)
    verdict: str = ""


def _run(cmd, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def fetch_source(work: Path) -> Path:
    """The unpacked Debian source tree of redis (``apt-get source``), cached in *work*."""
    work.mkdir(parents=True, exist_ok=True)
    have = sorted(work.glob("redis-7.0.15/debian/patches/series"))
    if not have:
        p = _run(["apt-get", "source", "-q", "redis"], cwd=work, timeout=600)
        have = sorted(work.glob("redis-7.0.15/debian/patches/series"))
        if p.returncode != 0 or not have:
            raise Unavailable(f"apt-get source redis failed: {(p.stderr or p.stdout)[-300:]}")
    missing = [d for d in BUILD_DEPS
               if _run(["dpkg-query", "-W", "-f=${Status}", d]).stdout.find("installed") < 0]
    if missing:
        p = _run(["apt-get", "install", "-y", "-q", *missing], timeout=900,
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode != 0:
            raise Unavailable(f"apt-get install {' '.join(missing)} failed: {p.stderr[-300:]}")
    return have[0].parents[2]


def vulnerable_tree(debsrc: Path, dest: Path) -> tuple[Path, Path]:
    """(tree as shipped before the fix, the fix as a -p1 diff)."""
    patches = debsrc / "debian" / "patches"
    series = [ln.split()[0] for ln in (patches / "series").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    before = series[: series.index(FIX)]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    orig = next(debsrc.parent.glob("redis_7.0.15.orig.tar.*"))
    subprocess.run(["tar", "xf", str(orig), "-C", str(dest), "--strip-components=1"],
                   check=True)
    for name in before:
        subprocess.run(["patch", "-p1", "-s", "-i", str(patches / name)], cwd=dest, check=True)
    return dest, patches / FIX


def build_program(tree: Path, script: Path) -> float:
    script.write_text(DEBIAN_MAKE)
    script.chmod(0o755)
    t0 = time.monotonic()
    p = _run([str(script)], cwd=tree, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"redis build failed: {p.stderr[-2000:]}")
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis did not listen on 127.0.0.1:{port}")


def trigger(port: int, n: int = TRIGGER_COMMANDS) -> dict:
    """Unauthenticated pipeline of *n* commands, unread while the server answers; then read
    everything: how many -NOAUTH replies came back and whether the server closed us."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"SET x 5\r\n" * n)
    time.sleep(0.5)  # the server processes the pipeline with our replies unread
    s.settimeout(1.0)
    data = bytearray()
    closed = False
    while True:
        try:
            chunk = s.recv(1 << 16)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    s.close()
    return {"commands": n, "noauth_replies": data.count(b"-NOAUTH"), "closed_by_server": closed}


def _cli(tree: Path, port: int, *args: str) -> str:
    return _run([str(tree / "src" / "redis-cli"), "-h", "127.0.0.1", "-p", str(port), "-a",
                 PASSWORD, "--no-auth-warning", *args], timeout=30).stdout


def _opus(*args: str, timeout: float = 1800) -> dict:
    p = _run([*OPUS, *args], timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"opus-bpf {args[0]} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)


def run_case(work: Path, *, fast: bool = False, requests: int = 1_000_000,
             benchmark: str = "set,get", log=print) -> Figures:
    """Everything above. *fast*: build the program once, under the capture (its binary comes
    from the capture's copy and its compile commands are reused): one build instead of two."""
    fig = Figures()
    debsrc = fetch_source(work / "debsrc")
    tree, fix = vulnerable_tree(debsrc, work / "redis-vuln")
    script = work / "debian-make.sh"
    script.write_text(DEBIAN_MAKE)
    script.chmod(0o755)
    bundle = work / "cve-2025-21605.opus"
    if fast:
        sys.path.insert(0, str(REPO))
        from opus_bpf.patchbuild.capture import capture_compile_commands

        t0 = time.monotonic()
        cap = capture_compile_commands(tree, str(script),
                                       workdir=work / "capture")
        fig.program_build_seconds = fig.capture_seconds = time.monotonic() - t0
        built = cap.workdir / "tree"  # type: ignore[operator]
        how = ["--compile-commands", str(cap.path)]
    else:
        fig.program_build_seconds = build_program(tree, script)
        built = tree
        how = ["--build", str(script)]
    log(f"built redis in {fig.program_build_seconds:.1f} s")
    binary = built / "src" / "redis-server"

    t0 = time.monotonic()
    b = _opus("build", "--src", str(tree), "--patch", str(fix), "--binary", str(binary),
              *how, "-o", str(bundle), "--json")
    fig.opus_build_seconds = time.monotonic() - t0
    if not fast:
        fig.capture_seconds = b["compile_commands"]["capture_seconds"]
    fig.patch_compile_seconds = b["compile_seconds"]
    fig.functions_replaced = b["functions_replaced"]
    fig.verdict = b["verdict"]
    log(f"opus-bpf build: {fig.functions_replaced} in {fig.opus_build_seconds:.1f} s")
    tree = built

    port = _free_port()
    server = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
         "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
         "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench = None
    try:
        _wait_port(port)
        fig.trigger_before = trigger(port)
        log(f"trigger, unpatched: {fig.trigger_before}")
        n = requests
        bench = subprocess.Popen(
            [str(tree / "src" / "redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-a",
             PASSWORD, "-c", "50", "-n", str(n), "-r", "100000", "-t", benchmark, "-e",
             "--csv"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        a = _opus("apply", str(bundle), "--pid", str(server.pid), "--json", "--timeout", "30")
        fig.apply_wait_us = a["wait_seconds"] * 1e6
        fig.apply_pause_us = a["pause_seconds"] * 1e6
        fig.apply_attempts = a["attempts"]
        log(f"applied: wait {fig.apply_wait_us:.0f} µs, pause {fig.apply_pause_us:.0f} µs")
        fig.trigger_patched = trigger(port)
        log(f"trigger, patched: {fig.trigger_patched}")
        time.sleep(0.3)
        r = _opus("revert", str(bundle), "--pid", str(server.pid), "--json", "--timeout", "30")
        fig.revert_wait_us = r["wait_seconds"] * 1e6
        fig.revert_pause_us = r["pause_seconds"] * 1e6
        fig.trigger_reverted = trigger(port)
        log(f"trigger, reverted: {fig.trigger_reverted}")
        if bench.poll() is not None:
            raise RuntimeError("redis-benchmark finished before the revert: raise -n")
        out, err = bench.communicate(timeout=600)
        fig.benchmark_rc = bench.returncode
        fig.benchmark_requests = len(benchmark.split(",")) * n
        errors = sum(1 for ln in (out + err).splitlines() if "Error" in ln)
        fig.failed_requests = errors if bench.returncode == 0 else max(errors, 1)
        log(f"redis-benchmark rc={bench.returncode}: {out.strip()}")
        stats = _cli(tree, port, "INFO", "stats")
        log("server: " + " ".join(ln for ln in stats.splitlines()
                                   if ln.startswith(("total_connections", "total_commands",
                                                     "client_output_buffer_limit"))))
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.wait()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_REDIS_WORK") or tempfile.mkdtemp(prefix="opus-redis-"))
    fast = "--fast" in sys.argv
    fig = run_case(work, fast=fast, requests=600_000 if fast else 1_000_000,
                   benchmark="set" if fast else "set,get",
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(asdict(fig), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
