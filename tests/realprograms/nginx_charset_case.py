"""nginx 1.22.1 from Debian 12's source package: CVE-2026-42934, a fix to a function gcc inlined
everywhere, applied live with ``apply --exe`` to master + 2 workers under wrk, and reverted.

1. The tree the binary is built from: upstream 1.22.1 plus debian/patches up to, not including,
   ``CVE-2026-42934.patch`` (charset filter: a UTF-8 character split over 3+ one-byte buffers
   is decoded with the wrong length and ``ngx_memcpy`` reads past the buffer).
   ``./configure --with-cc-opt='-O2 -g' && make``.
2. ``opus-bpf build --src <apt-get source tree, every patch applied> --patch
   debian/patches/series --pick CVE-2026-42934.patch --build ...``. The changed
   ``ngx_http_charset_recode_from_utf8`` has no symbol (inlined into
   ``ngx_http_charset_body_filter``): the bundle replaces ``ngx_http_charset_body_filter`` and
   carries the new function (``reach``).
3. nginx proxies (``proxy_buffering off``, ``source_charset utf-8; charset windows-1251``) to a
   small upstream that sends ``a€b\\n`` one byte per segment. Unpatched: ``61 88 00 62 0a``
   (a stray NUL from the over-read); patched: ``61 88 62 0a``; reverted: the NUL again.
   wrk loads ``/load`` throughout.

``sudo .venv/bin/python tests/realprograms/nginx_charset_case.py`` prints the figures.
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
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nginx_case import BUILD, _opus, fetch_source
from redis_case import Unavailable, _free_port, _run, _wait_port

FIX = "CVE-2026-42934.patch"
BODY = "a\u20acb\n".encode()  # the euro sign: 3 bytes of UTF-8, 0x88 in windows-1251

CONF = """worker_processes 2;
daemon off;
master_process on;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    include {conf}/win-utf;
    server {{
        listen 127.0.0.1:{port};
        location /load {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://127.0.0.1:{up};
            proxy_buffering off;
            source_charset utf-8;
            charset windows-1251;
        }}
    }}
}}
"""


@dataclass
class Figures:
    program: str = "nginx 1.22.1 (Debian 1.22.1-9+deb12u9 source), master + 2 workers"
    fix: str = "CVE-2026-42934 (debian/patches/" + FIX + ")"
    functions_replaced: list[str] = field(default_factory=list)
    functions_added: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdict: str = ""
    program_build_seconds: float = 0.0
    opus_build_seconds: float = 0.0
    apply: list[dict] = field(default_factory=list)
    revert: list[dict] = field(default_factory=list)
    wrk_requests: int = 0
    failed_requests: int = -1
    trigger_before: str = ""
    trigger_patched: str = ""
    trigger_reverted: str = ""


def tree_before(debsrc: Path, dest: Path) -> Path:
    """Upstream 1.22.1 + the Debian series before the fix: what the running nginx is built from."""
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
    return dest


def _upstream(stop: threading.Event) -> int:
    """An HTTP upstream that sends BODY one byte per TCP segment."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)

    def one(c: socket.socket) -> None:
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(BODY))
            for i in range(len(BODY)):
                time.sleep(0.03)
                c.sendall(BODY[i:i + 1])

    def loop() -> None:
        with srv:
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def trigger(port: int, n: int = 6) -> str:
    """The converted body as hex, from *n* requests (both workers): '|'-joined if they differ."""
    seen = set()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        seen.add(data.split(b"\r\n\r\n", 1)[1].hex(" "))
    return "|".join(sorted(seen))


def _per_process(res: dict) -> list[dict]:
    return [{"pid": p["pid"], "ok": p["ok"],
             "wait_us": round(p["result"]["wait_seconds"] * 1e6),
             "pause_us": round(p["result"]["pause_seconds"] * 1e6)}
            if p["ok"] else p for p in res["processes"]]


def run_case(work: Path, log=print) -> Figures:
    fig = Figures()
    debsrc = fetch_source(work / "debsrc")
    tree = tree_before(debsrc, work / "nginx-before")
    t0 = time.monotonic()
    p = _run(BUILD, shell=True, cwd=tree, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"nginx build failed: {p.stderr[-2000:]}")
    fig.program_build_seconds = time.monotonic() - t0
    binary = tree / "objs" / "nginx"
    bundle = work / "cve-2026-42934.opus"
    t0 = time.monotonic()
    # the analysis asks for review (the new code writes ctx->saved_len and the output buffer:
    # that is the fix): --accept-review
    rc, b = _opus("build", "--src", str(debsrc), "--patch",
                  str(debsrc / "debian" / "patches" / "series"), "--pick", FIX,
                  "--binary", str(binary), "--build", BUILD, "--accept-review",
                  "-o", str(bundle), "--json")
    if rc != 0:
        raise RuntimeError(f"opus-bpf build failed: {b}")
    fig.opus_build_seconds = time.monotonic() - t0
    fig.functions_replaced = b["functions_replaced"]
    fig.functions_added = b["functions_added"]
    fig.warnings = b.get("warnings", [])
    fig.verdict = b["verdict"]
    log(f"opus-bpf build: {fig.functions_replaced} + {fig.functions_added}")

    stop = threading.Event()
    up = _upstream(stop)
    run = work / "run"
    (run / "tmp").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    (run / "nginx.conf").write_text(CONF.format(d=run, port=port, up=up, conf=tree / "conf"))
    server = subprocess.Popen([str(binary), "-p", str(run), "-c", str(run / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    wrk = None
    try:
        _wait_port(port)
        fig.trigger_before = trigger(port)
        wrk = subprocess.Popen(["wrk", "-t2", "-c50", "-d40s", f"http://127.0.0.1:{port}/load"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        rc, a = _opus("apply", str(bundle), "--exe", str(binary), "--json")
        fig.apply = _per_process(a)
        if rc != 0:
            raise RuntimeError(f"apply --exe failed: {a}")
        fig.trigger_patched = trigger(port)
        rc, r = _opus("revert", str(bundle), "--exe", str(binary), "--json")
        fig.revert = _per_process(r)
        if rc != 0:
            raise RuntimeError(f"revert --exe failed: {r}")
        fig.trigger_reverted = trigger(port)
        if wrk.poll() is not None:
            raise RuntimeError(f"wrk finished before the revert: {wrk.communicate()[0]}")
        out, _ = wrk.communicate(timeout=90)
        m = re.search(r"(\d+) requests in", out)
        fig.wrk_requests = int(m.group(1)) if m else 0
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        fig.failed_requests = (sum(int(x) for x in errs.groups()) if errs else 0) + (
            int(non2xx.group(1)) if non2xx else 0)
        log(out)
    finally:
        stop.set()
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
            wrk.wait()
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_NGINX_WORK") or tempfile.mkdtemp(prefix="opus-nginx-cs-"))
    try:
        fig = run_case(work, log=lambda m: print(m, file=sys.stderr, flush=True))
    except Unavailable as e:
        print(f"unavailable: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(fig), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
