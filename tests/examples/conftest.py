"""Shared by the examples/bench tests: is the opus-bpf CLI there yet."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys

import pytest


@functools.cache
def cli_missing() -> str | None:
    """Why the live tests cannot run yet, or None when the CLI has build, apply and status."""
    if importlib.util.find_spec("opus_bpf.cli") is None:
        return "opus_bpf.cli is not written yet"
    for cmd in ("build", "apply", "status"):
        r = subprocess.run([sys.executable, "-m", "opus_bpf.cli", cmd, "--help"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return f"`opus-bpf {cmd}` is not available yet: {(r.stderr or r.stdout).strip()[-200:]}"
    return None


@pytest.fixture
def opus_cli() -> list[str]:
    """The opus-bpf command line; skips the test (with the reason) until the CLI can apply."""
    why = cli_missing()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("live patching needs root (ptrace, BPF)")
    return [sys.executable, "-m", "opus_bpf.cli"]
