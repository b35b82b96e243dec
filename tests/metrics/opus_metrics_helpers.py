"""Helpers for the metrics tests: free ports, HTTP, bundles, an agent subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TARGET_C = r"""
#include <stdio.h>
#include <unistd.h>
int work(int x) { return x * 2; }
int main(void) { volatile int s = 0; for (;;) { s += work(1); usleep(100000); } }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def http_post_json(url: str, obj: object) -> dict:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last failure
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def read_build_id(path: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from opus_bpf.agent.buildid import read_build_id as rb

    bid = rb(str(path))
    assert bid, f"{path} has no build-id"
    return bid


def write_bundle(path: Path, name: str, build_id: str, functions: list[str]) -> str:
    """A real, verifiable bundle whose patch.so is a placeholder (for the fake applier only).

    Returns the bundle id (content hash, computed by the bundle module).
    """
    sys.path.insert(0, str(ROOT))
    from opus_bpf import bundle as b

    m = b.Manifest(
        name=name, target=b.Target(path="/unused", build_id=build_id, elf_type="DYN"),
        patch_object=b.PatchObject("", 0),
        functions=[b.ReplacedFunction(f, "t.c", False, f) for f in functions],
    )
    return b.write_bundle(path, m, b"placeholder for " + name.encode()).id


class AgentProc:
    """`python -m opus_bpf.agent` in a subprocess, with its URL and log."""

    def __init__(self, tmp: Path, extra_args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.patch_dir = tmp / "patches"
        self.state_dir = tmp / "state"
        self.patch_dir.mkdir(exist_ok=True)
        self.log_path = tmp / "agent.log"
        self.extra_args = extra_args
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opus_bpf.agent", "--listen", f"127.0.0.1:{self.port}",
             "--patch-dir", str(self.patch_dir), "--state-dir", str(self.state_dir),
             *self.extra_args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.alive_or_fail() and http_get(self.url + "/healthz"), 30,
                 "the agent's /healthz")

    def alive_or_fail(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.logtext()}")
        return True

    def logtext(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict:
        return json.loads(http_get(self.url + "/status"))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


