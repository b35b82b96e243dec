#!/usr/bin/env python3
"""opus-bpf demo: fix a memory-safety bug in a running multithreaded server, under load.

Run it with `scripts/dev.sh demo` (as root). Steps: build the server and the load generator,
start both, show the bug (a crafted SET overflows the session's value buffer into its is_admin
flag and the server hands out its secret key), build a patch bundle from fix.diff, apply it to
the running server, show the bug is gone while the load generator never saw a failed request.

`--offline` checks fix.diff without opus-bpf: it patches a copy of the source, rebuilds and
restarts the server, and runs the same checks (useful while the live path is being built).
Exit status: 0 when every check passed, 1 when one failed, 2 when the demo could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
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

HERE = Path(__file__).resolve().parent
CFLAGS = "-O2 -g"
CRAFTED_LEN = 72  # VALUE_MAX (64) + 8: reaches is_admin and value_len


class DemoError(Exception):
    """A check or a command of the demo failed."""


@dataclass
class Exploit:
    """Replies to the crafted request sequence (SET 72 A*72, then KEY)."""

    set_reply: str
    key_reply: str

    @property
    def leaked(self) -> bool:
        """True when the server handed out its key to a session that never authenticated."""
        return self.key_reply.startswith("KEY ")


@dataclass
class Summary:
    """What the demo saw; written as JSON with --summary-json."""

    mode: str
    bug_before: bool = False
    fixed_after: bool = False
    valid_after: bool = False
    served_before: int = 0
    served_after: int = 0
    server_alive_after: bool = False
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    apply: dict[str, object] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    status: str = ""
    load: dict[str, object] = field(default_factory=dict)
    ok: bool = False
    error: str = ""


class Printer:
    """Numbered one-line steps."""

    def __init__(self, total: int) -> None:
        self.n = 0
        self.total = total

    def step(self, text: str) -> None:
        """Print the next numbered step."""
        self.n += 1
        print(f"[{self.n:>2}/{self.total}] {text}", flush=True)

    @staticmethod
    def detail(text: str) -> None:
        """Print an indented detail line under the current step."""
        for line in text.rstrip().splitlines():
            print(f"        {line}", flush=True)


def compile_c(src_dir: Path, source: str, out: Path) -> None:
    """Compile one demo program the way its bundle will be built (-O2 -g, PIE, pthreads).

    It runs in the source directory with a relative file name, so the DWARF names the unit
    `server.c`, the same path fix.diff patches.
    """
    cmd = ["gcc", *CFLAGS.split(), "-Wall", "-Wextra", "-pthread", source, "-o", str(out)]
    r = subprocess.run(cmd, cwd=src_dir, capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoError(f"gcc failed for {source}:\n{r.stderr}")


class Child:
    """A child process whose stdout lines a thread collects (readable with a timeout)."""

    def __init__(self, cmd: list[str], what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        """The next stdout line, within timeout seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise DemoError(f"{self.what} printed nothing within {timeout:.0f} s") from None
        if line is None:
            raise DemoError(f"{self.what} exited (status {self.proc.wait()}) too early")
        return line

    def finish(self, sig: int, timeout: float) -> list[str]:
        """Send sig, wait for the exit, return the remaining stdout lines."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        out = []
        while (line := self.lines.get(timeout=timeout)) is not None:
            out.append(line)
        return out

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the child if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_server(binary: Path, workers: int) -> tuple[Child, int, int]:
    """Start the server on a free loopback port; return (child, pid, port)."""
    server = Child([str(binary), "0", str(workers)], "server")
    try:
        first = server.readline(10).split()
        if len(first) < 4 or first[0] != "pid" or first[2] != "port":
            raise DemoError(f"unexpected server banner {' '.join(first)!r}")
        if server.readline(10) != "ready":
            raise DemoError("server did not print ready")
    except DemoError:
        server.kill()
        raise
    return server, int(first[1]), int(first[3])


def start_loadgen(binary: Path, port: int, conns: int, timeout_ms: int) -> Child:
    """Start the load generator and wait until every connection had a good reply."""
    cmd = [str(binary), str(port), "-c", str(conns), "-t", str(timeout_ms)]
    loadgen = Child(cmd, "load generator")
    try:
        if loadgen.readline(15) != "ready":
            raise DemoError("load generator did not print ready")
    except DemoError:
        loadgen.kill()
        raise
    return loadgen


def stop_loadgen(loadgen: Child, timeout_ms: int) -> dict[str, object]:
    """Stop the load generator with SIGINT and return its JSON totals."""
    out = loadgen.finish(signal.SIGINT, timeout_ms / 1000 + 10)
    lines = [ln for ln in out if ln.startswith("{")]
    if loadgen.proc.returncode != 0 or not lines:
        raise DemoError(f"load generator ended with status {loadgen.proc.returncode}: {out!r}")
    return json.loads(lines[-1])


def request(port: int, lines: list[str], timeout: float = 5.0) -> list[str]:
    """Send request lines on a fresh connection, one at a time; return the reply lines."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rwb")
        for line in lines:
            f.write(line.encode() + b"\n")
            f.flush()
            reply = f.readline()
            if not reply.endswith(b"\n"):
                raise DemoError(f"connection closed after {line[:20]!r}")
            replies.append(reply.decode(errors="replace").rstrip("\r\n"))
    return replies


def exploit(port: int) -> Exploit:
    """Send the crafted SET (72 bytes into a 64-byte buffer) and ask for the key."""
    set_reply, key_reply = request(port, [f"SET {CRAFTED_LEN} {'A' * CRAFTED_LEN}", "KEY"])
    return Exploit(set_reply, key_reply)


def requests_served(port: int) -> int:
    """The server's requests_served counter, from STATS."""
    reply = request(port, ["STATS"])[0]
    if not reply.startswith("STATS served="):
        raise DemoError(f"unexpected STATS reply {reply!r}")
    return int(reply.split()[1].split("=")[1])


def valid_requests_work(port: int) -> bool:
    """A normal session still works: SET of 64 bytes (the limit) and GET it back."""
    data = "v" * 64
    return request(port, [f"SET 64 {data}", "GET", "PING"]) == ["OK 64", f"VALUE {data}", "PONG"]


def opus_command(explicit: str | None) -> list[str]:
    """The opus-bpf command line: --opus-bpf, the venv's console script, or python -m."""
    if explicit:
        return explicit.split()
    script = Path(sys.executable).with_name("opus-bpf")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "opus_bpf.cli"]


def run_opus(cmd: list[str], args: list[str], timeout: float = 300) -> str:
    """Run one opus-bpf command; return stdout or raise with its stderr."""
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        err = (r.stderr or r.stdout).strip()
        raise DemoError(f"opus-bpf {args[0]} failed (exit {r.returncode}):\n{err}")
    return r.stdout


def parse_json_output(out: str, what: str) -> dict[str, object]:
    """The JSON object a --json command printed (the whole output, or its last object line)."""
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    raise DemoError(f"{what} printed no JSON object: {out!r}")


def fmt_seconds(v: object) -> str:
    """Seconds as a short human figure (µs below 1 ms, ms below 1 s)."""
    if not isinstance(v, int | float):
        return "?"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    return f"{v:.2f} s"


def apply_line(info: dict[str, object]) -> str:
    """One line out of apply's JSON."""
    funcs = info.get("functions", [])
    if isinstance(funcs, list):
        names = ", ".join(f if isinstance(f, str) else str(f.get("name", f)) for f in funcs)
    else:
        names = str(funcs)
    return (f"applied to pid {info.get('pid')}: {names or '?'}; waited "
            f"{fmt_seconds(info.get('wait_seconds'))} for quiescence, all threads paused "
            f"{fmt_seconds(info.get('pause_seconds'))}, attempts {info.get('attempts', '?')}")


def stop_server(server: Child) -> str:
    """SIGTERM the server and return its last output line; raise unless it exits cleanly."""
    if not server.alive():
        raise DemoError(f"the server is gone (exit status {server.proc.returncode})")
    out = server.finish(signal.SIGTERM, 10)
    if server.proc.returncode != 0:
        raise DemoError(f"the server exited with status {server.proc.returncode}")
    return out[-1] if out else "no output"


def exit_text(status: int | None) -> str:
    """A child's exit status in words (killed by SIGSEGV, exit status 3, ...)."""
    if status is None:
        return "still running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def run(args: argparse.Namespace, work: Path, summary: Summary) -> None:
    """The demo proper; raises DemoError on the first failed check."""
    p = Printer(9 if args.offline else 10)
    server = loadgen = None
    try:
        compile_c(HERE, "server.c", work / "server")
        compile_c(HERE, "loadgen.c", work / "loadgen")
        p.step(f"built server and loadgen with gcc {CFLAGS} in {work}")

        server, pid, port = start_server(work / "server", args.workers)
        p.step(f"server running: pid {pid}, 127.0.0.1:{port}, {args.workers} worker threads")

        loadgen = start_loadgen(work / "loadgen", port, args.connections, args.timeout_ms)
        p.step(f"load generator running: {args.connections} connections sending valid requests "
               f"(a reply later than {args.timeout_ms} ms counts as failed)")

        before = exploit(port)
        summary.before = {"set": before.set_reply, "key": before.key_reply}
        summary.bug_before = before.leaked
        if not before.leaked:
            raise DemoError(f"the crafted request did not show the bug: {before}")
        summary.served_before = requests_served(port)
        p.step(f"bug: 'SET {CRAFTED_LEN} A...' -> {before.set_reply!r}, then 'KEY' without "
               f"AUTH -> {before.key_reply!r} (secret leaked); "
               f"requests served so far: {summary.served_before}")

        if args.offline:
            server, pid, port, loadgen = offline_fix(args, work, p, server, loadgen)
        else:
            live_fix(args, work, p, pid, summary)

        after = exploit(port)
        summary.after = {"set": after.set_reply, "key": after.key_reply}
        summary.fixed_after = not after.leaked and after.set_reply == "ERR length"
        summary.valid_after = valid_requests_work(port)
        if not summary.fixed_after:
            raise DemoError(f"the bug is still there after the fix: {after}")
        if not summary.valid_after:
            raise DemoError("valid requests fail after the fix")
        summary.served_after = requests_served(port)
        if not args.offline and summary.served_after <= summary.served_before:
            raise DemoError(f"requests_served went from {summary.served_before} to "
                            f"{summary.served_after}: the new code does not use the server's "
                            "own counter")
        p.step(f"fixed: 'SET {CRAFTED_LEN} A...' -> {after.set_reply!r}, 'KEY' -> "
               f"{after.key_reply!r}; a 64-byte SET/GET still works; requests served: "
               f"{summary.served_after}" +
               ("" if args.offline else " (the server's own counter, still counting)"))

        load = stop_loadgen(loadgen, args.timeout_ms)
        loadgen = None
        summary.load = load
        p.step(f"load generator: {load['ok']} good requests, {load['failed']} failed, "
               f"max latency {float(load['max_latency_us']) / 1000:.1f} ms "
               f"({load['requests_per_second']} req/s)")
        if load["failed"] != 0:
            raise DemoError(f"{load['failed']} requests failed during the demo: "
                            f"{load['failures']}, first: {load['first_failure']}")

        summary.server_alive_after = server.alive()
        last = stop_server(server)
        server = None
        p.step(f"server stopped cleanly ({last})")
    except DemoError as e:
        if server is not None and not server.alive():
            raise DemoError(f"{e}\nthe server died: {exit_text(server.proc.returncode)}") from e
        raise
    finally:
        for child in (loadgen, server):
            if child is not None:
                child.kill()


def live_fix(args: argparse.Namespace, work: Path, p: Printer, pid: int, summary: Summary) -> None:
    """Build the bundle from fix.diff and apply it to the running server with opus-bpf."""
    opus = opus_command(args.opus_bpf)
    bundle = work / "fix.opus"
    t0 = time.monotonic()
    run_opus(opus, ["build", "--src", str(HERE), "--patch", str(HERE / "fix.diff"),
                    "--binary", str(work / "server"), "--cflags", CFLAGS, "-o", str(bundle)])
    p.step(f"opus-bpf build: fix.diff -> {bundle.name} "
           f"({bundle.stat().st_size} bytes, {time.monotonic() - t0:.1f} s)")

    floor = None if args.no_floor else measure_floor(work, pid)
    summary.floor = floor or {}
    t0 = time.monotonic()
    out = run_opus(opus, ["apply", str(bundle), "--pid", str(pid), "--json"])
    wall = time.monotonic() - t0
    info = parse_json_output(out, "opus-bpf apply --json")
    summary.apply = info
    p.step(f"opus-bpf apply ({wall:.2f} s wall): {apply_line(info)}")
    if floor:
        p.detail(f"(floor just before, bench/floor.c stopping every thread of this server with "
                 f"bare ptrace {floor['rounds']} times: median {floor['median']:.0f} µs, "
                 f"p99 {floor['p99']:.0f} µs)")

    status = run_opus(opus, ["status", "--pid", str(pid)])
    summary.status = status
    p.step("opus-bpf status:")
    p.detail(status or "(no output)")


def measure_floor(work: Path, pid: int, rounds: int = 20) -> dict[str, float] | None:
    """bench/floor against the server: the least a stop-every-thread pause can be, right now.

    None (and the demo goes on) if it cannot be built or run.
    """
    binary = work / "floor"
    try:
        compile_c(HERE.parent.parent / "bench", "floor.c", binary)
        r = subprocess.run([str(binary), str(pid), "-r", str(rounds), "-g", "5000", "-m", "all"],
                           capture_output=True, text=True, timeout=60)
        pause = json.loads(r.stdout)["all"]["pause"] if r.returncode == 0 else None
    except (DemoError, OSError, subprocess.TimeoutExpired, ValueError, KeyError):
        return None
    if pause is None:
        return None
    return {"rounds": rounds, "median": pause["median"], "p99": pause["p99"]}


def offline_fix(args: argparse.Namespace, work: Path, p: Printer, server: Child,
                loadgen: Child) -> tuple[Child, int, int, Child]:
    """Check fix.diff by rebuilding: patch a copy, rebuild, restart server and load (not live)."""
    src = work / "fixed-src"
    src.mkdir()
    shutil.copy2(HERE / "server.c", src / "server.c")
    with open(HERE / "fix.diff") as diff:
        r = subprocess.run(["patch", "-p1", "--quiet", "-d", str(src)], stdin=diff,
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoError(f"fix.diff does not apply: {r.stdout}{r.stderr}")
    compile_c(src, "server.c", work / "server-fixed")
    p.step("offline: applied fix.diff with patch -p1 and rebuilt the server (no opus-bpf)")
    first = stop_loadgen(loadgen, args.timeout_ms)
    if first["failed"] != 0:
        raise DemoError(f"{first['failed']} requests failed before the fix: {first}")
    stop_server(server)
    server, pid, port = start_server(work / "server-fixed", args.workers)
    loadgen = start_loadgen(work / "loadgen", port, args.connections, args.timeout_ms)
    p.step(f"offline: restarted the fixed server as pid {pid} on port {port}, load restarted "
           f"({first['ok']} good requests before)")
    return server, pid, port, loadgen


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the demo, print the verdict."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--offline", action="store_true",
                    help="check fix.diff by rebuilding and restarting instead of opus-bpf")
    ap.add_argument("--workers", type=int, default=4, help="server worker threads (default 4)")
    ap.add_argument("--connections", type=int, default=4, help="load connections (default 4)")
    ap.add_argument("--timeout-ms", type=int, default=2000,
                    help="a reply later than this counts as a failed request (default 2000)")
    ap.add_argument("--opus-bpf", metavar="CMD", help="opus-bpf command (default: the venv's)")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip measuring the ptrace floor (bench/floor.c) before the apply")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--summary-json", type=Path, help="also write what the demo saw as JSON")
    args = ap.parse_args(argv)

    if shutil.which("gcc") is None:
        print("opus-bpf demo: gcc is missing (run scripts/dev.sh setup)", file=sys.stderr)
        return 2
    if not args.offline and os.geteuid() != 0:
        print("opus-bpf demo: live patching needs root (ptrace, BPF); try sudo", file=sys.stderr)
        return 2

    summary = Summary(mode="offline" if args.offline else "live")
    work = Path(tempfile.mkdtemp(prefix="opus-bpf-demo-"))
    rc = 1
    try:
        run(args, work, summary)
        summary.ok = True
        rc = 0
        print("demo passed: bug shown, fixed " +
              ("by rebuilding (offline)" if args.offline else "live") +
              f", {summary.load.get('failed')} failed requests", flush=True)
    except (DemoError, subprocess.TimeoutExpired, OSError) as e:
        summary.error = str(e)
        print(f"demo FAILED: {e}", file=sys.stderr, flush=True)
        args.keep = True
    finally:
        if args.summary_json:
            args.summary_json.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
