"""libexpat 2.5.0 from Debian 12's source package: CVE-2024-45490 fixed live with ``apply --lib``
in every process of a prefork XML service that maps the built ``libexpat.so.1``, under load.

1. ``apt-get source expat/bookworm`` (``2.5.0-1+deb12u2``); the tree before the fix: upstream
   2.5.0 plus debian/patches up to, not including, ``CVE-2024-45490.patch``
   (``XML_ParseBuffer`` accepts a negative length and moves its buffer end backwards: the next
   ``XML_GetBuffer`` hands out memory before the heap block).
2. Built as debian/rules builds libexpat1: ``buildconf.sh`` (autoreconf), ``dpkg-buildflags``
   CFLAGS + ``-Wall``, ``-Wl,-Bsymbolic-functions``, upstream's configure in a separate build
   directory, make (only ``lib/`` in the fast form).
3. ``opus-bpf build`` against ``build/lib/.libs/libexpat.so.1.8.10`` with the compile commands of
   that build; the fix itself unmodified. The fast form builds the library once, under the
   capture; the slow form builds it, then runs ``opus-bpf build --build`` on the ``apt-get
   source`` tree as unpacked (all patches applied) with ``--patch debian/patches/series
   --pick CVE-2024-45490.patch``: the copy it builds from is reverted to just before the fix.
4. ``xmlsrv`` (``expat_progs/``, linked against that library): a parent and 2 forked workers,
   one thread and one parser per connection; ``xmlload`` sends valid documents in two chunks
   over 8 connections and counts any reply other than the expected ``OK`` and any connection
   error, through ``apply --lib`` and ``revert --lib`` (all 3 processes).
5. Trigger: a chunk header ``-4096 0`` (the length the service passes to ``XML_ParseBuffer``):
   ``OK 0 0`` unpatched (the negative length is taken), ``ERR 41 invalid argument`` patched.

``sudo .venv/bin/python tests/realprograms/expat_case.py [--fast]`` prints the figures
(``OPUS_EXPAT_WORK=DIR`` keeps the trees there).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from redis_case import OPUS, REPO, Unavailable, _free_port, _run, _wait_port

FIX = "CVE-2024-45490.patch"
BUILD_DEPS = ["autoconf", "automake", "libtool", "dpkg-dev"]
PROGS = Path(__file__).resolve().parent / "expat_progs"
LIBRARY = "expat/build/lib/.libs/libexpat.so.1.8.10"
TRIGGER = b"-4096 0\n"

DEBIAN_BUILD = """#!/bin/sh
# libexpat as debian/rules builds it (the libexpat1 flavour): buildconf.sh, dpkg-buildflags
# CFLAGS + -Wall, -Wl,-Bsymbolic-functions, upstream's configure in a build directory, make.
set -e
cd expat
[ -x configure ] || ./buildconf.sh >/dev/null 2>&1
mkdir -p build && cd build
CFLAGS="$(dpkg-buildflags --get CFLAGS) -Wall" CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" \\
LDFLAGS="-Wl,-Bsymbolic-functions $(dpkg-buildflags --get LDFLAGS)" \\
  ../configure --build=x86_64-linux-gnu --prefix=/usr --without-docbook >configure.log
exec make -j"$(nproc)" "$@"
"""


@dataclass
class Figures:
    program: str = ("libexpat 2.5.0 (Debian 2.5.0-1+deb12u2 source) in a prefork XML service, "
                    "parent + 2 workers")
    fix: str = "CVE-2024-45490 (debian/patches/" + FIX + ")"
    functions_replaced: list[str] = field(default_factory=list)
    verdict: str = ""
    program_build_seconds: float = 0.0
    opus_build_seconds: float = 0.0
    capture_seconds: float = 0.0
    patch_compile_seconds: float = 0.0
    processes: int = 0
    apply_seconds: float = 0.0
    apply: list[dict] = field(default_factory=list)
    revert: list[dict] = field(default_factory=list)
    documents: int = 0
    failed_requests: int = -1
    load_rc: int = -1
    trigger_before: str = ""
    trigger_patched: str = ""
    trigger_reverted: str = ""


def fetch_source(work: Path) -> Path:
    """The unpacked Debian source tree of expat (``apt-get source``), cached in *work*."""
    work.mkdir(parents=True, exist_ok=True)
    have = sorted(work.glob("expat-2.5.0/debian/patches/series"))
    if not have:
        # bookworm's upload first: the newest security .dsc may be missing from the mirror (404)
        for spec in ("expat/bookworm", "expat"):
            _run(["apt-get", "source", "-q", spec], cwd=work, timeout=600)
            have = sorted(work.glob("expat-2.5.0/debian/patches/series"))
            if have:
                break
        if not have:
            raise Unavailable("apt-get source expat failed")
    missing = [d for d in BUILD_DEPS
               if "installed" not in _run(["dpkg-query", "-W", "-f=${Status}", d]).stdout]
    if missing:
        p = _run(["apt-get", "install", "-y", "-q", *missing], timeout=900,
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode != 0:
            raise Unavailable(f"apt-get install {' '.join(missing)} failed: {p.stderr[-300:]}")
    return have[0].parents[2]


def vulnerable_tree(debsrc: Path, dest: Path) -> tuple[Path, Path]:
    """(upstream 2.5.0 + the Debian series before the fix, the fix as a -p1 diff)."""
    patches = debsrc / "debian" / "patches"
    series = [ln.split()[0] for ln in (patches / "series").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    orig = next(debsrc.parent.glob("expat_2.5.0.orig.tar.*"))
    subprocess.run(["tar", "xf", str(orig), "-C", str(dest), "--strip-components=1"],
                   check=True)
    for name in series[: series.index(FIX)]:
        subprocess.run(["patch", "-p1", "-s", "-i", str(patches / name)], cwd=dest, check=True)
    return dest, patches / FIX


def build_service(lib_tree: Path, out: Path) -> tuple[Path, Path]:
    """xmlsrv linked against the library built in *lib_tree* (rpath to it), and xmlload."""
    out.mkdir(parents=True, exist_ok=True)
    libdir = lib_tree / "expat" / "build" / "lib" / ".libs"
    srv, load = out / "xmlsrv", out / "xmlload"
    for cmd in (
        ["gcc", "-O2", "-g", "-Wall", f"-I{lib_tree / 'expat' / 'lib'}", str(PROGS / "xmlsrv.c"),
         "-o", str(srv), f"-L{libdir}", "-lexpat", f"-Wl,-rpath,{libdir}", "-lpthread"],
        ["gcc", "-O2", "-g", "-Wall", str(PROGS / "xmlload.c"), "-o", str(load), "-lpthread"],
    ):
        p = _run(cmd)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr[-1000:]}")
    return srv, load


def trigger(port: int) -> str:
    """One chunk whose length is negative, on a new connection: the service's reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(TRIGGER)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def _opus(*args: str) -> tuple[int, dict]:
    p = _run([*OPUS, *args], timeout=1800, cwd=REPO)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError as e:
        raise RuntimeError(f"opus-bpf {args[0]} failed ({p.returncode}): {p.stderr}") from e


def _per_process(res: dict) -> list[dict]:
    return [{"pid": p["pid"], "ok": p["ok"],
             "wait_us": round(p["result"]["wait_seconds"] * 1e6),
             "pause_us": round(p["result"]["pause_seconds"] * 1e6)}
            if p["ok"] else p for p in res["processes"]]


def run_case(work: Path, *, fast: bool = False, log=print) -> Figures:
    """Everything above. *fast*: the library is built once, under the capture (``make -C lib``
    only), and the bundle is built from the hand-prepared tree with the fix as a plain diff."""
    fig = Figures()
    debsrc = fetch_source(work / "debsrc")
    tree, fix = vulnerable_tree(debsrc, work / "expat-vuln")
    script = work / "debian-build.sh"
    script.write_text(DEBIAN_BUILD)
    script.chmod(0o755)
    bundle = work / "cve-2024-45490.opus"
    if fast:
        sys.path.insert(0, str(REPO))
        from opus_bpf.patchbuild.capture import capture_compile_commands

        t0 = time.monotonic()
        cap = capture_compile_commands(tree, f"{script} -C lib", workdir=work / "capture")
        fig.program_build_seconds = fig.capture_seconds = time.monotonic() - t0
        built = cap.workdir / "tree"  # type: ignore[operator]
        how = ["--src", str(tree), "--patch", str(fix), "--compile-commands", str(cap.path)]
    else:
        t0 = time.monotonic()
        p = _run([str(script)], cwd=tree, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"expat build failed: {p.stderr[-2000:]}")
        fig.program_build_seconds = time.monotonic() - t0
        built = tree
        # --src is the `apt-get source` tree as unpacked (every patch applied, .pc/): the
        # series' --pick brings a copy back to "just before the fix"
        how = ["--src", str(debsrc), "--patch", str(debsrc / "debian" / "patches" / "series"),
               "--pick", FIX, "--build", f"{script} -C lib"]
    log(f"built libexpat in {fig.program_build_seconds:.1f} s")
    library = built / LIBRARY
    srv, load = build_service(built, work / "bin")

    t0 = time.monotonic()
    # the analysis asks for review: the new code stores XML_ERROR_INVALID_ARGUMENT into
    # parser->m_errorCode, a value the old function never stored there (that is the fix)
    rc, b = _opus("build", *how, "--binary", str(library),
                  "--accept-review", "-o", str(bundle), "--json")
    if rc != 0:
        raise RuntimeError(f"opus-bpf build failed: {b}")
    fig.opus_build_seconds = time.monotonic() - t0
    if not fast:
        fig.capture_seconds = b["compile_commands"]["capture_seconds"]
    fig.patch_compile_seconds = b["compile_seconds"]
    fig.functions_replaced = b["functions_replaced"]
    fig.verdict = b["verdict"]
    log(f"opus-bpf build: {fig.functions_replaced} in {fig.opus_build_seconds:.1f} s")

    port = _free_port()
    server = subprocess.Popen([str(srv), str(port), "2"], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    loader = None
    try:
        pids = [int(x) for x in server.stdout.readline().split()[1:]]  # type: ignore[union-attr]
        _wait_port(port)
        fig.trigger_before = trigger(port)
        log(f"trigger, unpatched: {fig.trigger_before}")
        loader = subprocess.Popen([str(load), str(port), "8", "600"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        t0 = time.monotonic()
        rc, a = _opus("apply", str(bundle), "--lib", str(library), "--json", "--timeout", "30")
        fig.apply_seconds = time.monotonic() - t0
        fig.processes = len(a["processes"])
        fig.apply = _per_process(a)
        if rc != 0:
            raise RuntimeError(f"apply --lib failed: {a}")
        if sorted(p["pid"] for p in a["processes"]) != sorted(pids):
            raise RuntimeError(f"apply --lib patched {a['processes']}, the service is {pids}")
        log(f"apply --lib: {fig.apply} in {fig.apply_seconds:.1f} s")
        # new connections land on either worker: every answer must come from the fixed code
        fig.trigger_patched = "|".join(sorted({trigger(port) for _ in range(10)}))
        log(f"trigger, patched: {fig.trigger_patched}")
        time.sleep(0.5)
        rc, r = _opus("revert", str(bundle), "--lib", str(library), "--json", "--timeout", "30")
        fig.revert = _per_process(r)
        if rc != 0:
            raise RuntimeError(f"revert --lib failed: {r}")
        fig.trigger_reverted = "|".join(sorted({trigger(port) for _ in range(10)}))
        log(f"trigger, reverted: {fig.trigger_reverted}")
        time.sleep(0.5)
        if loader.poll() is not None:
            raise RuntimeError(f"xmlload stopped early: {loader.communicate()}")
        loader.send_signal(signal.SIGINT)
        out, err = loader.communicate(timeout=60)
        fig.load_rc = loader.returncode
        m = re.search(r"documents=(\d+) chunks=\d+ failed=(\d+) errors=(\d+)", out)
        if m is None:
            raise RuntimeError(f"xmlload: {out} {err}")
        fig.documents = int(m.group(1))
        fig.failed_requests = int(m.group(2)) + int(m.group(3))
        log(f"xmlload rc={loader.returncode}: {out.strip()} {err.strip()[:500]}")
    finally:
        if loader is not None and loader.poll() is None:
            loader.kill()
            loader.wait()
        os.killpg(server.pid, signal.SIGKILL)  # the parent and its workers
        server.wait()
    return fig


def main() -> int:
    work = Path(os.environ.get("OPUS_EXPAT_WORK") or tempfile.mkdtemp(prefix="opus-expat-"))
    fig = run_case(work, fast="--fast" in sys.argv,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(asdict(fig), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
