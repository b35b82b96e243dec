"""Helpers for runtime tests: a running target whose output is collected, the CLI, /proc reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TARGETS = Path(__file__).parent / "targets"
CFLAGS = ["-O2", "-g", "-Wall"]
OPUS = [sys.executable, "-m", "opus_bpf.cli"]

pytestmark = pytest.mark.root


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("runtime tests need root (ptrace + BPF)")


class Proc:
    """A running target whose stdout lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()
        first = self.wait_for(lambda ln: ln.startswith("ready "), 10)
        self.pid = int(first.split()[1])

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for ln in self.p.stdout:
            with self.cond:
                self.lines.append(ln.rstrip("\n"))
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 10.0, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ln in self.lines[since:]:
                    if pred(ln):
                        return ln
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.lines[-10:])
                    raise AssertionError(
                        f"expected line not seen in {timeout}s; last lines:\n{tail}"
                    )
                self.cond.wait(left)

    def lines_since(self, mark: int) -> list[str]:
        with self.cond:
            return list(self.lines[mark:])

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(5)


def opus(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*OPUS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parents[2],
    )


def apply_json(bundle: Path, pid: int, *extra: str) -> dict:
    res = opus("apply", str(bundle), "--pid", str(pid), "--json", *extra)
    assert res.returncode == 0, f"apply failed: {res.stderr}"
    return json.loads(res.stdout)


def status_json(pid: int) -> dict:
    res = opus("status", "--pid", str(pid), "--json")
    return json.loads(res.stdout)


def entry_bytes(pid: int, addr: int, n: int = 5) -> bytes:
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        return f.read(n)
