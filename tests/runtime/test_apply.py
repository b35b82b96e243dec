"""Apply / revert / status on real multithreaded processes, asserting what the process does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rtharness import apply_json, entry_bytes, opus, status_json

from opus_bpf.target.elf import load_elf


@pytest.fixture(params=["consistent", "per-thread"])
def mode(request):
    """The generic targets run in both apply modes (per-thread: runtime/perthread.py)."""
    return request.param


def _counter_lines(p, since):
    return [ln for ln in p.lines_since(since) if ln.startswith("v=")]


def test_single_thread_apply_status_revert(run_target, built, bundle, mode):
    src, binary = built("counter")
    fix = bundle("counter")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("v=1 "))
    sym = load_elf(str(binary)).function("compute")
    res = apply_json(fix, p.pid, "--mode", mode)
    assert [f["name"] for f in res["functions"]] == ["compute"]
    assert res["attempts"] >= 1 and res["pause_seconds"] > 0
    mark = p.mark()
    # the patched code runs and updates the static counter that unpatched main() prints
    first = p.wait_for(lambda ln: ln.startswith("v=100 "), since=mark)
    p.wait_for(lambda ln: ln.startswith("v=100 ") and ln != first, since=p.mark())
    p.wait_for(lambda ln: ln.startswith("v=100 "), since=p.mark())
    after = [ln for ln in _counter_lines(p, mark) if ln.startswith("v=100 ")]
    c = [int(re.search(r"counter=(\d+)", ln).group(1)) for ln in after[:3]]
    assert c[1] - c[0] == 1000 and c[2] - c[1] == 1000
    st = status_json(p.pid)
    assert [(x["id"], x["state"], x["entry_ok"]) for x in st["patches"]] == [
        (res["bundle_id"], "active", True)
    ]
    old = int(res["functions"][0]["old_address"], 16)
    assert entry_bytes(p.pid, old)[0] == 0xE9
    # revert: the original bytes (from the ELF file) come back and so does the old behaviour
    r = opus("revert", str(fix), "--pid", str(p.pid), "--json")
    assert r.returncode == 0, r.stderr
    mark = p.mark()
    p.wait_for(lambda ln: ln.startswith("v=1 "), since=mark)
    assert entry_bytes(p.pid, old) == load_elf(str(binary)).read_vaddr(sym.value, 5)
    assert [x["state"] for x in status_json(p.pid)["patches"]] == ["reverted"]
    assert p.alive()


def test_apply_twice_refused_then_reapply_after_revert(run_target, built, bundle):
    _src, binary = built("counter")
    fix = bundle("counter")
    p = run_target(binary)
    apply_json(fix, p.pid)
    again = opus("apply", str(fix), "--pid", str(p.pid))
    assert again.returncode != 0 and "already applied" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert opus("revert", str(fix), "--pid", str(p.pid)).returncode == 0
    apply_json(fix, p.pid)  # reuses the mapped object
    mark = p.mark()
    p.wait_for(lambda ln: ln.startswith("v=100 "), since=mark)
    with open(f"/proc/{p.pid}/maps") as f:
        heads = [ln for ln in f if "/objects/" in ln and ln.split()[2] == "00000000"]
    assert len(heads) == 1, heads  # the reverted object was reused, not mapped a second time


def test_stacked_patches_revert_in_reverse_order(run_target, built, bundle):
    _src, binary = built("counter")
    fix1, fix2 = bundle("counter", "fix"), bundle("counter", "fix2")
    p = run_target(binary)
    apply_json(fix1, p.pid)
    p.wait_for(lambda ln: ln.startswith("v=100 "), since=p.mark())
    apply_json(fix2, p.pid)
    p.wait_for(lambda ln: ln.startswith("v=7 "), since=p.mark())
    states = {x["id"]: x["functions"][0]["state"] for x in status_json(p.pid)["patches"]}
    assert sorted(s.split(":")[0] for s in states.values()) == ["active", "stacked-under"]
    bad = opus("revert", str(fix1), "--pid", str(p.pid))
    assert bad.returncode != 0 and "revert it first" in bad.stderr
    assert opus("revert", str(fix2), "--pid", str(p.pid)).returncode == 0
    p.wait_for(lambda ln: ln.startswith("v=100 "), since=p.mark())
    assert opus("revert", str(fix1), "--pid", str(p.pid)).returncode == 0
    p.wait_for(lambda ln: ln.startswith("v=1 "), since=p.mark())


def test_sixteen_threads_calling_function_and_malloc(run_target, built, bundle, mode):
    _src, binary = built("threads")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("old=") and not ln.startswith("old=0 "))
    res = apply_json(bundle("threads"), p.pid, "--mode", mode, "--timeout", "30")
    assert res["functions"][0]["name"] == "transform"
    mark = p.mark()
    # after the pause every call reaches the new code; no call ever got a wrong result
    p.wait_for(lambda ln: re.match(r"old=0 new=[1-9]\d* bad=0$", ln) is not None, since=mark)
    later = p.mark()
    p.wait_for(lambda ln: ln.startswith("old="), since=later)
    for ln in p.lines_since(mark):
        assert ln.endswith("bad=0"), ln
    assert all(ln.startswith("old=0 ") for ln in p.lines_since(later) if ln.startswith("old="))
    assert p.alive()


def test_threads_blocked_in_read_and_nanosleep_carry_on(run_target, built, bundle, mode):
    _src, binary = built("blocked")
    fix = bundle("blocked")
    p = run_target(binary)
    apply_json(fix, p.pid, "--mode", mode)
    assert p.p.stdin is not None
    p.p.stdin.write("hello-after-patch\n")
    p.p.stdin.flush()
    ln = p.wait_for(lambda ln: ln.startswith("read "))
    assert ln == "read n=18 errno=0 data=hello-after-patch version=2"
    sl = p.wait_for(lambda ln: ln.startswith("sleep "), timeout=20)
    m = re.match(r"sleep r=0 errno=0 slept=(\d+\.\d+) version=2", sl)
    assert m, sl
    assert float(m.group(1)) >= 6.0  # the interrupted sleep was restarted, not cut short
    p.wait_for(lambda ln: ln == "done version=2")


def test_registers_and_syscall_restored_exactly(run_target, built, bundle, mode):
    _src, binary = built("regs")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("round=3 "))
    apply_json(bundle("regs"), p.pid, "--mode", mode)
    mark = p.mark()
    p.wait_for(lambda ln: ln.endswith("level=2"), since=mark)
    p.wait_for(lambda ln: ln.startswith("round=") and ln.endswith("level=2"), since=p.mark())
    lines = [ln for ln in p.lines if ln.startswith("round=")]
    assert all(" bad=0 ret=0 " in ln for ln in lines), [
        ln for ln in lines if " bad=0 ret=0 " not in ln
    ]


def test_function_always_on_stack_times_out_untouched(run_target, built, bundle, mode):
    _src, binary = built("busy")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("tick "))
    before = Path(f"/proc/{p.pid}/maps").read_text()
    res = opus("apply", str(bundle("busy")), "--pid", str(p.pid), "--timeout", "1", "--mode", mode)
    assert res.returncode == 3, res.stderr
    assert (
        "timed out" in res.stderr
        and "serve_forever" in res.stderr
        and "nothing was changed" in res.stderr
    )
    assert len(res.stderr.strip().splitlines()) == 1
    sym = load_elf(str(binary)).function("serve_forever")
    assert Path(f"/proc/{p.pid}/maps").read_text() == before  # the patch object is unmapped again
    mark = p.mark()
    p.wait_for(lambda ln: ln.startswith("tick "), since=mark)
    assert not any(ln.startswith("tock") for ln in p.lines)
    assert status_json(p.pid)["patches"] == []
    assert sym.size > 5 and p.alive()


def test_recursion(run_target, built, bundle, mode):
    _src, binary = built("recursion")
    p = run_target(binary)
    p.wait_for(lambda ln: ln == "walk=2000")
    apply_json(bundle("recursion"), p.pid, "--mode", mode, "--timeout", "30")
    mark = p.mark()
    p.wait_for(lambda ln: ln == "walk=4000", since=mark)
    later = p.mark()
    p.wait_for(lambda ln: ln.startswith("walk="), since=later)
    walks = {int(ln[5:]) for ln in p.lines if ln.startswith("walk=")}
    if mode == "consistent":
        # one call tree never mixes versions: only whole-old or whole-new sums appear
        assert walks <= {2000, 4000}
    else:
        # new calls switch at once, so a walk under way finishes its deeper calls in the new
        # code: its sum lies between the two, and every later walk is wholly new
        assert all(2000 <= w <= 4000 for w in walks), walks
    assert all(ln == "walk=4000" for ln in p.lines_since(later) if ln.startswith("walk="))


def test_signal_handler_calling_patched_function(run_target, built, bundle, mode):
    _src, binary = built("sigcall")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("main=30 ") and "handler_old=0 " not in ln)
    apply_json(bundle("sigcall"), p.pid, "--mode", mode, "--timeout", "30")
    mark = p.mark()
    ln = p.wait_for(
        lambda ln: ln.startswith("main=300 ") and "handler_new=0 " not in ln, since=mark
    )
    assert ln.endswith("handler_bad=0")
    assert all(x.endswith("handler_bad=0") for x in p.lines if x.startswith("main="))


def test_forked_children_inherit_the_patch(run_target, built, bundle, mode):
    _src, binary = built("forker")
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("child ") and ln.endswith("answer=41"))
    apply_json(bundle("forker"), p.pid, "--mode", mode)
    mark = p.mark()
    p.wait_for(lambda ln: ln.startswith("child ") and ln.endswith("answer=42"), since=mark)
    later = p.mark()
    p.wait_for(lambda ln: ln.startswith("parent "), since=later)
    assert all(
        ln.endswith(("answer=42", "child_status=0"))
        for ln in p.lines_since(later)
        if ln.startswith(("child", "parent"))
    )
    assert all("child_status=0" in ln for ln in p.lines if ln.startswith("parent "))


def test_patch_calling_ifunc_string_functions(run_target, built, bundle):
    _src, binary = built("libcalls")
    fix = bundle("libcalls")
    p = run_target(binary)
    p.wait_for(lambda ln: ln == "n=10 out=value-text")
    apply_json(fix, p.pid)
    p.wait_for(lambda ln: ln == "n=10 out=value-text+10", since=p.mark())
    assert p.alive()


@pytest.mark.parametrize("extra", [("-fno-ipa-ra",), ("-fno-ipa-ra", "-fvisibility=hidden")])
def test_patch_updates_the_programs_global(run_target, built, bundle, extra):
    _src, binary = built("globals", extra)
    fix = bundle("globals", "fix", extra)
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("r=1 "))
    apply_json(fix, p.pid)
    first = p.wait_for(lambda ln: ln.startswith("r=2 "), since=p.mark())
    second = p.wait_for(lambda ln: ln.startswith("r=2 ") and ln != first, since=p.mark())
    t1, t2 = (int(x.rsplit("=", 1)[1]) for x in (first, second))
    assert t2 - t1 == 100  # main() reads the very variable the new code writes


def test_non_pie_executable(run_target, built, bundle):
    _src, binary = built("counter", ("-no-pie",))
    fix = bundle("counter", "fix", ("-no-pie",))
    assert load_elf(str(binary)).elf_type == "ET_EXEC"
    p = run_target(binary)
    p.wait_for(lambda ln: ln.startswith("v=1 "))
    res = apply_json(fix, p.pid)
    assert res["functions"][0]["jump"] in ("rel32", "abs64")
    p.wait_for(lambda ln: ln.startswith("v=100 "), since=p.mark())
    assert opus("revert", str(fix), "--pid", str(p.pid)).returncode == 0
    p.wait_for(lambda ln: ln.startswith("v=1 "), since=p.mark())
