"""nginx 1.22.1 from Debian 12's source package: master + 2 workers, CVE-2026-42945 fixed in every
process with ``apply --exe`` under wrk, and reverted.

1. ``apt-get source nginx/bookworm``; the tree before the fix: upstream 1.22.1 plus
   debian/patches up to, not including, ``CVE-2026-42945.patch`` (rewrite: ``is_args`` never
   cleared, so captures evaluated after a rewrite with arguments are escaped into a buffer sized
   for the unescaped value: wrong output, possible overrun).
2. Upstream's build: ``./configure --with-cc-opt='-O2 -g' && make`` (configure+make).
3. ``opus-bpf build`` with the compile commands captured from that build (``--build``, or, in
   the fast form, the capture *is* the program's build); the analysis asks for review (the fix
   writes ``e->is_args``, the point of the fix): ``--accept-review``.
4. nginx on 127.0.0.1 (master + 2 workers) with the config from the commit message; wrk runs
   through ``apply --exe`` and ``revert --exe`` (all three processes).
5. Trigger: ``GET /a%20b%3Fc`` answers ``$1``: ``/a%20b`` before the fix (escaped, truncated),
   ``/a b?c`` with it.

``sudo .venv/bin/python tests/realprograms/nginx_case.py [--fast]`` prints the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from redis_case import OPUS, REPO, Unavailable, _free_port, _run, _wait_port

FIX = "CVE-2026-42945.patch"
BUILD = "./configure --with-cc-opt='-O2 -g' && make -j\"$(nproc)\""
BUILD_DEPS = ["libpcre2-dev", "zlib1g-dev", "wrk"]
TRIGGER = "/a%20b%3Fc"

CONF = """worker_processes 2;
daemon off;
master_process on;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            rewrite ^(.*) /new?c=1;
            set $myvar $1;
            return 200 "$myvar\\n";
        }}
    }}
}}
"""


@dataclass
class Figures:
    program: str = "nginx 1.22.1 (Debian 1.22.1-9+deb12u9 source), master + 2 workers"
    fix: str = "CVE-2026-42945 (debian/patches/" + FIX + ")"
    functions_replaced: list[str] = field(default_factory=list)
    program_build_seconds: float = 0.0
    opus_build_seconds: float = 0.0
    patch_compile_seconds: float = 0.0
    verdict: str = ""
    processes: int = 0
    apply: list[dict] = field(default_factory=list)
    revert: list[dict] = field(default_factory=list)
    wrk_requests: int = 0
    failed_requests: int = -1
    trigger_before: str = ""
    trigger_patched: str = ""
    trigger_reverted: str = ""


def fetch_source(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    have = sorted(work.glob("nginx-1.22.1/debian/patches/series"))
    if not have:
        # the newest security upload may be missing from the mirror: fall back to bookworm's
        for spec in ("nginx/bookworm-security", "nginx/bookworm", "nginx"):
            _run(["apt-get", "source", "-q", spec], cwd=work, timeout=600)
            have = sorted(work.glob("nginx-1.22.1/debian/patches/series"))
            if have:
                break
        if not have:
            raise Unavailable("apt-get source nginx failed")
    missing = [d for d in BUILD_DEPS
               if "installed" not in _run(["dpkg-query", "-W", "-f=${Status}", d]).stdout]
    if missing:
        p = _run(["apt-get", "install", "-y", "-q", *missing], timeout=900,
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode != 0:
            raise Unavailable(f"apt-get install {' '.join(missing)} failed: {p.stderr[-300:]}")
    return have[0].parents[2]


def vulnerable_tree(debsrc: Path, dest: Path) -> tuple[Path, Path]:
    patches = debsrc / "debian" / "patches"
    series = [ln.split()[0] for ln in (patches / "series").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    orig = next(debsrc.parent.glob("nginx_1.22.1.orig.tar.*"))
    subprocess.run(["tar", "xf", str(orig), "-C", str(dest), "--strip-components=1"],
                   check=True)
    for name in series[: series.index(FIX)]:
        subprocess.run(["patch", "-p1", "-s", "-i", str(patches / name)], cwd=dest, check=True)
    return dest, patches / FIX


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode().strip()


def _opus(*args: str) -> tuple[int, dict]:
    p = _run([*OPUS, *args], timeout=1800, cwd=REPO)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError as e:
        raise RuntimeError(f"opus-bpf {args[0]} failed ({p.returncode}): {p.stderr}") from e


def run_case(work: Path, *, fast: bool = False, log=print) -> Figures:
    fig = Figures()
    tree, fix = vulnerable_tree(fetch_source(work / "debsrc"), work / "nginx-vuln")
    if fast:
        sys.path.insert(0, str(REPO))
        from opus_bpf.patchbuild.capture import capture_compile_commands

        t0 = time.monotonic()
        cap = capture_compile_commands(tree, BUILD, workdir=work / "capture")
        fig.program_build_seconds = time.monotonic() - t0
        built, how = cap.workdir / "tree", ["--compile-commands", str(cap.path)]  # type: ignore
    else:
        t0 = time.monotonic()
        p = _run(BUILD, shell=True, cwd=tree, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"nginx build failed: {p.stderr[-2000:]}")
        fig.program_build_seconds = time.monotonic() - t0
        built, how = tree, ["--build", BUILD]
    log(f"built nginx in {fig.program_build_seconds:.1f} s")
    binary = built / "objs" / "nginx"
    bundle = work / "cve-2026-42945.opus"
    t0 = time.monotonic()
    rc, b = _opus("build", "--src", str(tree), "--patch", str(fix), "--binary", str(binary),
                  *how, "--accept-review", "-o", str(bundle), "--json")
    if rc != 0:
        raise RuntimeError(f"opus-bpf build failed: {b}")
    fig.opus_build_seconds = time.monotonic() - t0
    fig.patch_compile_seconds = b["compile_seconds"]
    fig.functions_replaced = b["functions_replaced"]
    fig.verdict = b["verdict"]
    log(f"opus-bpf build: {fig.functions_replaced} in {fig.opus_build_seconds:.1f} s")

    run = work / "run"
    (run / "tmp").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (run / "nginx.conf").write_text(CONF.format(d=run, port=port))
    server = subprocess.Popen([str(binary), "-p", str(run), "-c", str(run / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    wrk = None
    try:
        _wait_port(port)
        fig.trigger_before = _get(port, TRIGGER)
        wrk = subprocess.Popen(["wrk", "-t2", "-c50", "-d30s", f"http://127.0.0.1:{port}/load"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        t0 = time.monotonic()
        rc, a = _opus("apply", str(bundle), "--exe", str(binary), "--json")
        log(f"apply --exe took {time.monotonic() - t0:.1f} s")
        fig.processes = len(a["processes"])
        fig.apply = [{"pid": p["pid"], "ok": p["ok"],
                      "wait_us": round(p["result"]["wait_seconds"] * 1e6),
                      "pause_us": round(p["result"]["pause_seconds"] * 1e6)}
                     if p["ok"] else p for p in a["processes"]]
        if rc != 0:
            raise RuntimeError(f"apply --exe failed: {a}")
        # several requests: each worker that takes one must answer with the fixed code
        fig.trigger_patched = "|".join(sorted({_get(port, TRIGGER) for _ in range(20)}))
        time.sleep(0.5)
        rc, r = _opus("revert", str(bundle), "--exe", str(binary), "--json")
        fig.revert = [{"pid": p["pid"], "ok": p["ok"],
                       "wait_us": round(p["result"]["wait_seconds"] * 1e6),
                       "pause_us": round(p["result"]["pause_seconds"] * 1e6)}
                      if p["ok"] else p for p in r["processes"]]
        if rc != 0:
            raise RuntimeError(f"revert --exe failed: {r}")
        fig.trigger_reverted = "|".join(sorted({_get(port, TRIGGER) for _ in range(20)}))
        if wrk.poll() is not None:
            raise RuntimeError(f"wrk finished before the revert: {wrk.communicate()[0]}")
        out, _ = wrk.communicate(timeout=60)
        m = re.search(r"(\d+) requests in", out)
        fig.wrk_requests = int(m.group(1)) if m else 0
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        fig.failed_requests = (sum(int(x) for x in errs.groups()) if errs else 0) + (
            int(non2xx.group(1)) if non2xx else 0)
        log(out)
    finally:
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
            wrk.wait()
        os.kill(server.pid, signal.SIGTERM)  # the master stops its workers
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_NGINX_WORK") or tempfile.mkdtemp(prefix="opus-nginx-"))
    fig = run_case(work, fast="--fast" in sys.argv,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(asdict(fig), indent=2))
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    sys.exit(main())
