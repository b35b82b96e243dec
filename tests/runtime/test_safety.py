"""Never harm the target: held locks, a tracer killed at any instant, and clear refusals."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import zipfile

import pytest
from rtharness import CFLAGS, OPUS, TARGETS, apply_json, entry_bytes, opus, status_json

from opus_bpf.target.elf import load_elf


def test_no_deadlock_while_target_holds_malloc_and_loader_locks(
    run_target, built, bundle, tmp_path
):
    _src, binary = built("locks")
    fix = bundle("locks")
    lib = tmp_path / "libslowinit.so"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(lib),
            "-x",
            "c",
            str(TARGETS / "locks" / "slowinit.c.lib"),
        ],
        check=True,
    )
    flag = tmp_path / "release"
    p = run_target(binary, str(lib), env={"SLOWINIT_FLAG": str(flag)})
    held = p.wait_for(lambda ln: ln.startswith("holding malloc lock"))
    pipe_fd = int(held.rsplit("=", 1)[1])
    time.sleep(0.2)  # main is now blocked inside malloc_info with the arena lock held
    with open(f"/proc/{p.pid}/task/{p.pid}/syscall") as f:
        assert f.read().split()[0] == "1"  # blocked in write(2), called from malloc_info
    res = apply_json(fix, p.pid)
    assert res["functions"][0]["name"] == "generation"
    p.wait_for(lambda ln: ln == "worker generation=2", since=p.mark())
    flag.touch()  # let the constructor finish: dlopen returns into new code
    p.wait_for(lambda ln: ln == "dlopen ok generation=2")
    with open(f"/proc/{p.pid}/fd/{pipe_fd}", "rb", buffering=0) as pipe:
        os.set_blocking(pipe.fileno(), False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if not pipe.read(65536):
                    time.sleep(0.01)
            except BlockingIOError:
                time.sleep(0.01)
            if any(ln.startswith("malloc lock released") for ln in p.lines):
                break
    p.wait_for(lambda ln: ln == "malloc lock released generation=2")
    p.wait_for(lambda ln: ln == "main generation=2")


def test_tracer_killed_at_any_instant_leaves_process_whole(run_target, built, bundle):
    """SIGKILL `opus-bpf apply` at spread instants: the target runs on, old or new, never mixed."""
    _src, binary = built("threads")
    fix = bundle("threads")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("old=") and not ln.startswith("old=0 "))
    sym = load_elf(str(binary)).function("transform")
    original = load_elf(str(binary)).read_vaddr(sym.value, 5)
    rng = random.Random(1234)
    delays = [rng.uniform(0.0, 1.2) for _ in range(8)]
    outcomes = []
    for delay in delays:
        proc = subprocess.Popen(
            [*OPUS, "apply", str(fix), "--pid", str(p.pid), "--timeout", "5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.1)
        assert p.alive()
        st = status_json(p.pid)
        active = [x for x in st["patches"] if x["state"] == "active"]
        assert all(x["entry_ok"] for x in st["patches"]), st
        mark = p.mark()
        ln = p.wait_for(lambda ln: ln.startswith("old="), since=mark)
        ln = p.wait_for(lambda ln: ln.startswith("old="), since=p.mark())
        assert ln.endswith("bad=0"), ln
        # no thread is left stopped: the process keeps making progress
        assert not ln.startswith("old=0 new=0 ")
        if active:
            outcomes.append("applied")
            assert opus("revert", str(fix), "--pid", str(p.pid), "--timeout", "30").returncode == 0
        else:
            outcomes.append("untouched")
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            with open(f"/proc/{p.pid}/task/{tid}/status") as f:
                status = f.read()
            assert "TracerPid:\t0\n" in status, f"thread {tid} still traced"
            assert "State:\tt" not in status, f"thread {tid} left stopped"
    # the original entry is back after each applied round was reverted
    with open(f"/proc/{p.pid}/maps") as f:
        bias_line = next(ln for ln in f if str(binary) in ln)
    bias = int(bias_line.split("-")[0], 16)
    assert entry_bytes(p.pid, bias + sym.value) == original
    assert len(outcomes) == len(delays)


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_no_such_pid(bundle):
    fix = bundle("counter")
    _one_line_error(opus("apply", str(fix), "--pid", "4194000"), "no such process")


def test_not_root_is_refused(bundle, built):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    fix = bundle("counter")
    res = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            *OPUS,
            "apply",
            str(fix),
            "--pid",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    _one_line_error(res, "root")


def test_build_id_mismatch(run_target, built, bundle):
    _src, other = built("counter", ("-DOTHER_BUILD=1",))
    fix = bundle("counter")
    p = run_target(other)
    _one_line_error(opus("apply", str(fix), "--pid", str(p.pid)), "build-id")
    assert status_json(p.pid)["patches"] == []


def test_function_too_short_for_a_jump(run_target, built, bundle):
    _src, binary = built("tiny")
    res = opus(
        "build",
        "--src",
        str(binary.parent),
        "--patch",
        str(TARGETS / "tiny" / "fix.diff"),
        "--binary",
        str(binary),
        "--cflags",
        " ".join(CFLAGS),
        "-o",
        str(binary.parent / "t.opus"),
        "--accept-review",
    )
    if res.returncode != 0:
        _one_line_error(res, "tiny")
        assert "short" in res.stderr or "bytes" in res.stderr
        return
    p = run_target(binary)
    _one_line_error(
        opus("apply", str(binary.parent / "t.opus"), "--pid", str(p.pid)), "tiny", "short"
    )


def test_corrupt_and_tampered_bundles(run_target, built, bundle, tmp_path):
    _src, binary = built("counter")
    fix = bundle("counter")
    p = run_target(binary)
    truncated = tmp_path / "trunc.opus"
    truncated.write_bytes(fix.read_bytes()[:200])
    _one_line_error(opus("apply", str(truncated), "--pid", str(p.pid)), "bundle")
    tampered = tmp_path / "tampered.opus"
    with zipfile.ZipFile(fix) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "patch.so":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(item, data)
    _one_line_error(opus("apply", str(tampered), "--pid", str(p.pid)), "sha256")
    assert status_json(p.pid)["patches"] == []


def test_stripped_binary_needs_debug_file(run_target, built, bundle, tmp_path):
    src, binary = built("counter")
    fix = bundle("counter")
    stripped = tmp_path / "counter"
    shutil.copy(binary, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    p = run_target(stripped)
    _one_line_error(opus("apply", str(fix), "--pid", str(p.pid)), "stripped", "debug")
    p.stop()
    # with a separate debug file found through .gnu_debuglink it works
    debug = tmp_path / "counter.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    linked = tmp_path / "linked"
    linked.mkdir()
    subprocess.run(
        [
            "objcopy",
            "--strip-all",
            f"--add-gnu-debuglink={debug}",
            str(binary),
            str(linked / "counter"),
        ],
        check=True,
    )
    shutil.copy(debug, linked / "counter.debug")
    p2 = run_target(linked / "counter")
    apply_json(fix, p2.pid)
    p2.wait_for(lambda ln: ln.startswith("v=100 "), since=p2.mark())


def test_process_exits_during_apply(run_target, built, bundle):
    _src, binary = built("busy")
    fix = bundle("busy")
    p = run_target(binary)
    proc = subprocess.Popen(
        [*OPUS, "apply", str(fix), "--pid", str(p.pid), "--timeout", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    p.p.kill()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "exited" in err or "no such process" in err or "zombie" in err


def test_new_function_clobbering_registers_callers_keep_is_refused(built, tmp_path):
    """gcc -fipa-ra: callers may keep values in registers the old add() never wrote."""
    src, binary = built("globals")
    out = tmp_path / "g.opus"
    res = opus(
        "build",
        "--src",
        str(src),
        "--patch",
        str(TARGETS / "globals" / "fix.diff"),
        "--binary",
        str(binary),
        "--cflags",
        " ".join(CFLAGS),
        "-o",
        str(out),
        "--accept-review",
    )
    _one_line_error(res, "writes", "-fno-ipa-ra")
    assert not out.exists()


def _torn_stable(p, window: float = 0.3) -> tuple[str, int]:
    """The version main() sees and the torn count, once it stops moving (a half-applied patch
    would make every price()/tax() pair disagree, so torn would keep growing)."""
    p.wait_for(lambda ln: ln.startswith("version="), since=p.mark())
    ln1 = p.wait_for(lambda ln: ln.startswith("version="), since=p.mark())
    time.sleep(window)
    ln2 = p.wait_for(lambda ln: ln.startswith("version="), since=p.mark())
    t1, t2 = (int(x.split("torn=")[1].split()[0]) for x in (ln1, ln2))
    assert t2 == t1, (ln1, ln2)
    return ln2.split()[0], t2


def test_two_functions_switch_together_even_if_killed(run_target, built, bundle):
    _src, binary = built("multi")
    fix = bundle("multi")
    p = run_target(binary)
    assert _torn_stable(p)[0] == "version=1"
    res = opus("apply", str(fix), "--pid", str(p.pid), "--json")
    assert res.returncode == 0, res.stderr
    assert _torn_stable(p)[0] == "version=2"
    st = status_json(p.pid)["patches"][0]
    assert st["activation"] == "gated" and st["entry_ok"] and st["state"] == "active"
    assert opus("revert", str(fix), "--pid", str(p.pid)).returncode == 0
    assert _torn_stable(p)[0] == "version=1"
    rng = random.Random(99)
    for delay in [rng.uniform(0.2, 1.2) for _ in range(6)]:
        proc = subprocess.Popen(
            [*OPUS, "apply", str(fix), "--pid", str(p.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        version, _torn = _torn_stable(p)
        patches = status_json(p.pid)["patches"]
        assert all(x["entry_ok"] for x in patches), patches
        applied = any(x["state"] == "active" for x in patches)
        assert version == ("version=2" if applied else "version=1")
        if any(x["state"] in ("active", "interrupted") for x in patches):
            assert opus("revert", str(fix), "--pid", str(p.pid)).returncode == 0
            assert _torn_stable(p)[0] == "version=1"
