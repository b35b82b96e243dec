"""Shared libraries and many processes: `apply --lib` patches every process mapping the library."""

from __future__ import annotations

import json
import shutil
import subprocess

from rtharness import TARGETS, opus, status_json


def test_library_patched_in_every_process_that_maps_it(run_target, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TARGETS / "sharedlib", src)
    lib = src / "libcalc.so"
    subprocess.run(
        ["gcc", "-O2", "-g", "-fPIC", "-shared", "-o", str(lib), str(src / "calc.c")], check=True
    )
    prog = src / "prog"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-g",
            "-x",
            "c",
            "-o",
            str(prog),
            str(src / "prog.txt"),
            f"-L{src}",
            "-lcalc",
            f"-Wl,-rpath,{src}",
        ],
        check=True,
    )
    fix = tmp_path / "calc.opus"
    res = opus(
        "build",
        "--src",
        str(src),
        "--patch",
        str(src / "fix.diff"),
        "--binary",
        str(lib),
        "--cflags",
        "-O2 -g -fPIC",
        "-o",
        str(fix),
        "--accept-review",
    )
    assert res.returncode == 0, res.stderr
    procs = [run_target(prog) for _ in range(3)]
    for p in procs:
        p.wait_for(lambda ln: ln.startswith("calc=1 "))
    res = opus("apply", str(fix), "--lib", str(lib), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["failed"] == 0
    assert sorted(r["pid"] for r in out["processes"]) == sorted(p.pid for p in procs)
    for p in procs:
        first = p.wait_for(lambda ln: ln.startswith("calc=5 "), since=p.mark())
        second = p.wait_for(
            lambda ln, first=first: ln.startswith("calc=5 ") and ln != first, since=p.mark()
        )
        c1, c2 = (int(x.rsplit("=", 1)[1]) for x in (first, second))
        assert c2 - c1 == 10  # the library's own static counter, updated by the new code
        assert [x["state"] for x in status_json(p.pid)["patches"]] == ["active"]
    res = opus("revert", str(fix), "--lib", str(lib))
    assert res.returncode == 0, res.stderr
    assert "3 of 3 processes done" in res.stdout
    for p in procs:
        p.wait_for(lambda ln: ln.startswith("calc=1 "), since=p.mark())


def test_exe_selects_only_processes_running_that_build(run_target, built, bundle):
    _src, binary = built("counter")
    _osrc, other = built("counter", ("-DOTHER_BUILD=1",))
    fix = bundle("counter")
    mine = [run_target(binary), run_target(binary)]
    stranger = run_target(other)
    res = opus("apply", str(fix), "--exe", str(binary), "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(r["pid"] for r in json.loads(res.stdout)["processes"]) == sorted(
        p.pid for p in mine
    )
    for p in mine:
        p.wait_for(lambda ln: ln.startswith("v=100 "), since=p.mark())
    assert status_json(stranger.pid)["patches"] == []
