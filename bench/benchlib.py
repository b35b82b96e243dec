"""Pieces the benches share: building bench/*.c, running a target, running the floor.

bench_floor.py measures the floor of stopping every thread; bench_apply.py (opus-bpf apply on
the same targets) should use the same Target and floor() so both figures come from one run.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
CFLAGS = "-O2 -g"


def build(out_dir: Path = BUILD) -> dict[str, Path]:
    """Compile target and floor (gcc -O2 -g -Wall -Wextra) into out_dir; return their paths.

    The target is compiled in bench/ with the relative name target.c, so its DWARF names the
    unit the way work_fix.diff does (a/target.c): `opus-bpf build --src bench`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    progs = {"target": ["-pthread"], "floor": []}
    paths = {}
    for name, extra in progs.items():
        out = out_dir / name
        src = BENCH / f"{name}.c"
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            cmd = ["gcc", *CFLAGS.split(), "-Wall", "-Wextra", *extra, f"{name}.c", "-o", str(out)]
            r = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"gcc failed for {name}.c:\n{r.stderr}")
        paths[name] = out
    return paths


@dataclass
class Target:
    """A running bench/target: `mode` (spin, paced, percall) with `threads` workers.

    Its stdin is a pipe we hold, so it exits when we close it (or when we die).
    """

    binary: Path
    mode: str
    threads: int
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    pid: int = 0
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start(self, timeout: float = 30) -> Target:
        """Start it and wait for "ready"."""
        self.proc = subprocess.Popen([str(self.binary), self.mode, str(self.threads), *self.extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        banner = self.readline(timeout).split()
        if banner[:1] != ["pid"]:
            self.stop()
            raise RuntimeError(f"unexpected target banner {banner}")
        self.pid = int(banner[1])
        while self.readline(timeout) != "ready":
            pass
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def readline(self, timeout: float = 10) -> str:
        """The next stdout line (percall batches, probe answers, ...)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"target {self.pid} printed nothing in {timeout} s") from None
        if line is None:
            raise RuntimeError(f"target {self.pid} exited")
        return line

    def command(self, cmd: str, answer_prefix: str, timeout: float = 10) -> str:
        """Send one stdin command; return the first line starting with answer_prefix."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.01, deadline - time.monotonic()))
            if line.startswith(answer_prefix):
                return line

    def probe(self, x: int = 1) -> int:
        """work(x) computed in the target now (changes once work_fix.diff is live)."""
        return int(self.command(f"probe {x}", f"probe {x} ").split()[2])

    def calls(self) -> int:
        """Calls of work() so far, all threads."""
        return int(self.command("calls", "calls ").split()[1])

    def stop(self) -> int | None:
        """Close its stdin (it exits), kill it if it does not; return its exit status."""
        if self.proc is None:
            return None
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            return self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> Target:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def floor(binary: Path, pid: int, rounds: int = 100, gap_us: int = 10000, mode: str = "both",
          samples: bool = False, serial_rounds: int | None = None, fifo: bool = False,
          timeout: float = 1800) -> dict:
    """Run bench/floor against pid; return its JSON (durations in µs).

    fifo runs the tracer as SCHED_FIFO (what a tracer that raises its priority for the pause
    could reach); the default is the normal policy, like opus-bpf itself.
    """
    cmd = [str(binary), str(pid), "-r", str(rounds), "-g", str(gap_us), "-m", mode,
           "-R", str(serial_rounds or rounds)]
    if fifo:
        cmd.append("-f")
    if samples:
        cmd.append("-s")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"floor failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine(),
            "loadavg": [round(x, 2) for x in load],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fmt_us(v: float) -> str:
    """Microseconds as µs below 1 ms, else ms."""
    return f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.2f} ms"
