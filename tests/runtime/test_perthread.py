"""Per-thread mode: new calls switch at once, threads are held one at a time, a killed tracer
leaves the process whole. Every assertion is about what the target process prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from rtharness import OPUS, apply_json, entry_bytes, opus, status_json

from opus_bpf.target.elf import load_elf

NEW_ONLY = r"old=0 new=[1-9]\d* bad=0$"
OLD_ONLY = r"old=[1-9]\d* new=0 bad=0$"


def _bias(pid: int, binary) -> int:
    with open(f"/proc/{pid}/maps") as f:
        return int(next(ln for ln in f if str(binary) in ln).split("-")[0], 16)


def _no_thread_traced_or_stopped(pid: int) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            status = f.read()
        assert "TracerPid:\t0\n" in status, f"thread {tid} still traced"
        assert "State:\tt" not in status, f"thread {tid} left stopped"


def _sigtrap_action_is_default(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        cgt = next(ln for ln in f if ln.startswith("SigCgt:"))
    return not int(cgt.split()[1], 16) & (1 << (signal.SIGTRAP - 1))


def _checksums_hold(p, rounds: int = 2) -> str:
    """Every call returned a whole checksum and the threads make progress."""
    ln = ""
    for _ in range(rounds):
        ln = p.wait_for(lambda ln: ln.startswith("old="), since=p.mark())
        assert ln.endswith(" bad=0"), ln
    assert not ln.startswith("old=0 new=0 "), ln
    return ln


def test_safe_patch_switches_per_thread_by_default(run_target, built, bundle):
    _src, binary = built("checksum")
    p = run_target(binary)
    _checksums_hold(p)
    res = apply_json(bundle("checksum", "fix_safe"), p.pid)
    assert res["mode"] == "per-thread"
    assert res["hold_max_seconds"] > 0 and res["busy_threads"] >= 0
    assert [x["state"] for x in status_json(p.pid)["patches"]] == ["active"]
    _checksums_hold(p)
    assert _sigtrap_action_is_default(p.pid)  # the trap handler is gone again
    r = opus("revert", str(bundle("checksum", "fix_safe")), "--pid", str(p.pid), "--json")
    assert r.returncode == 0, r.stderr
    assert '"mode": "per-thread"' in r.stdout
    _checksums_hold(p)
    _no_thread_traced_or_stopped(p.pid)


def test_hot_function_every_call_whole_through_the_switch(run_target, built, bundle):
    """8 threads call mix() back to back while it is switched and switched back, 3 times:
    each call lands in old or new code whole (its checksum and version agree)."""
    _src, binary = built("checksum")
    fix = bundle("checksum")
    p = run_target(binary)
    _checksums_hold(p)
    sym = load_elf(str(binary)).function("mix")
    original = load_elf(str(binary)).read_vaddr(sym.value, 5)
    for _ in range(3):
        res = apply_json(fix, p.pid, "--mode", "per-thread", "--timeout", "30")
        assert res["mode"] == "per-thread"
        p.wait_for(
            lambda ln: re.match(r"old=0 new=[1-9]\d* bad=0$", ln) is not None, since=p.mark()
        )
        r = opus("revert", str(fix), "--pid", str(p.pid), "--timeout", "30")
        assert r.returncode == 0, r.stderr
        p.wait_for(
            lambda ln: re.match(r"old=[1-9]\d* new=0 bad=0$", ln) is not None, since=p.mark()
        )
    assert all(ln.endswith(" bad=0") for ln in p.lines if ln.startswith("old="))
    assert entry_bytes(p.pid, _bias(p.pid, binary) + sym.value) == original
    assert _sigtrap_action_is_default(p.pid)
    _no_thread_traced_or_stopped(p.pid)


def test_per_thread_refuses_a_process_that_blocks_sigtrap(run_target, built, bundle):
    """A thread that traps with SIGTRAP blocked is killed by the kernel: --mode per-thread says
    so in one line and changes nothing; the default mode falls back to a consistent apply."""
    _src, binary = built("checksum")
    p = run_target(binary, env={"BLOCK_SIGNALS": "1"})
    _checksums_hold(p)
    before = Path(f"/proc/{p.pid}/maps").read_text()
    fix = bundle("checksum", "fix_safe")
    res = opus("apply", str(fix), "--pid", str(p.pid), "--mode", "per-thread")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "blocks SIGTRAP" in res.stderr
    assert Path(f"/proc/{p.pid}/maps").read_text() == before
    assert status_json(p.pid)["patches"] == []
    res = apply_json(fix, p.pid)
    assert res["mode"] == "consistent"
    _checksums_hold(p)


KILL_POINTS = [
    "traphandler:launched",  # a thread let go to make the rt_sigaction call on its own
    "perthread:installed",  # handler in place, no trap byte yet
    "perthread:armed",  # trap bytes at the entries, answered by the handler
    "perthread:held",  # one thread held alone (pass 1)
    "perthread:tail",  # jump bytes behind the trap byte
    "perthread:head",  # entries final, handler still in place
    "perthread:settled",  # every thread checked, handler about to go
]


@pytest.mark.parametrize("operation", ["apply", pytest.param("revert", marks=pytest.mark.slow)])
def test_tracer_killed_at_each_step_leaves_process_whole(run_target, built, bundle, operation):
    """SIGKILL opus-bpf exactly at each step of a per-thread apply (or revert): the process
    runs on with whole checksums, no thread traced or stopped, and a revert always finishes."""
    _src, binary = built("checksum")
    fix = bundle("checksum")
    p = run_target(binary)
    _checksums_hold(p)
    sym = load_elf(str(binary)).function("mix")
    original = load_elf(str(binary)).read_vaddr(sym.value, 5)
    entry = _bias(p.pid, binary) + sym.value
    for point in KILL_POINTS:
        if operation == "revert":
            apply_json(fix, p.pid, "--mode", "per-thread", "--timeout", "30")
            argv = [*OPUS, "revert", str(fix), "--pid", str(p.pid), "--mode", "per-thread"]
        else:
            argv = [*OPUS, "apply", str(fix), "--pid", str(p.pid), "--mode", "per-thread"]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "OPUS_BPF_FAILPOINT": point},
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        assert proc.poll() is None, f"{point}: opus-bpf ended: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.1)
        assert p.alive(), point
        _checksums_hold(p)
        _no_thread_traced_or_stopped(p.pid)
        st = status_json(p.pid)
        assert all(x["entry_ok"] for x in st["patches"]), (point, st)
        # whatever the step, a revert brings the original entry and action back
        if any(x["state"] in ("active", "switching") for x in st["patches"]):
            r = opus("revert", str(fix), "--pid", str(p.pid), "--timeout", "30")
            assert r.returncode == 0, (point, r.stderr)
        assert entry_bytes(p.pid, entry) == original, point
        assert _sigtrap_action_is_default(p.pid), point
        _checksums_hold(p)
