"""Run patched code: a tiny in-process stand-in for the runtime (tests/build/data/harness)
applies the bundle at startup, so these tests check that the slots really reach the target's
own state (globals, statics, function-local statics, static functions), non-PIE and PIE."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from buildharness import CFLAGS, COUNTER, DATA
from elftools.elf.elffile import ELFFile

from opus_bpf.bundle import read_bundle
from opus_bpf.patchbuild import build_bundle
from opus_bpf.patchbuild.elfinfo import read_target

HARNESS = DATA / "harness" / "opus_preload.c"


@pytest.fixture(scope="session")
def preload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("harness") / "opus_preload.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(out), str(HARNESS), "-ldl"],
                   check=True)
    return out


def run_patched(binary: Path, bundle: Path, preload: Path, tmp: Path, *args: str
                ) -> subprocess.CompletedProcess[str]:
    b = read_bundle(bundle)
    so = tmp / "patch.so"
    so.write_bytes(b.so_bytes)
    with open(so, "rb") as f:
        so_syms = {s.name: s["st_value"] for s in ELFFile(f).get_section_by_name(".symtab")
                   .iter_symbols() if s.name and s["st_shndx"] != "SHN_UNDEF"}
    tgt = read_target(binary).symbols
    slots, jumps = [], []
    for bd in b.manifest.bindings:
        if bd.binding == "global":
            sym = tgt.global_sym(bd.symbol)
        else:
            name = bd.target_symbol or bd.symbol
            sym = tgt.local_sym(bd.file, name)[0]
        slots.append(f"{so_syms[bd.slot]:x}:{sym.value:x}")
    for fn in b.manifest.functions:
        old = (tgt.local_sym(fn.file, fn.name)[0] if fn.static else tgt.global_sym(fn.name))
        assert old.size >= 12, f"{fn.name}: the harness writes a 12-byte jump"
        jumps.append(f"{old.value:x}:{so_syms[fn.new_symbol]:x}")
    env = dict(os.environ, LD_PRELOAD=str(preload), OPUS_SO=str(so),
               OPUS_SLOTS=",".join(slots), OPUS_JUMPS=",".join(jumps))
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True,
                          timeout=20)


def test_unpatched_baseline(counter_bins, preload: Path) -> None:
    p = subprocess.run([str(counter_bins["pie"]), "aaa", "bb"], capture_output=True, text=True,
                       env=dict(os.environ, LD_PRELOAD=str(preload)))
    assert p.stdout == "counter=10 scount=6 last=bb hits=2 twice=20\n"


@pytest.mark.parametrize("kind", ["nopie", "pie", "hidden"])
def test_patched_code_updates_target_state(kind, counter_bins, preload, make_diff,
                                           tmp_path: Path) -> None:
    diff = make_diff([
        ("    calls++;\n    st.hits++;\n    counter += helper((int)strlen(req));\n"
         "    strncpy(last, req, sizeof(last) - 1);",
         "    calls += 10;\n    st.hits += calls;\n"
         "    counter += helper((int)strlen(req)) * 100;\n"
         "    strncpy(last, \"patched\", sizeof(last) - 1);"),
    ])
    out = tmp_path / "run.opus"
    build_bundle(COUNTER, diff, counter_bins[kind], out, cflags=CFLAGS)
    p = run_patched(counter_bins[kind], out, preload, tmp_path, "aaa", "bb")
    assert p.returncode == 0, p.stderr
    # report() is the target's own code: it sees what the patched handle() wrote
    assert p.stdout == "counter=1000 scount=6 last=patched hits=30 twice=2000\n"


def test_patched_helper_copy_and_new_function(counter_bins, preload, make_diff,
                                              tmp_path: Path) -> None:
    diff = make_diff([
        ("int __attribute__((noinline)) handle(const char *req)\n{",
         "static int validate(const char *req)\n{\n    return strlen(req) < 3;\n}\n\n"
         "int __attribute__((noinline)) handle(const char *req)\n{"),
        ("    calls++;\n", "    if (!validate(req))\n        return -1;\n"
                          "    calls++;\n    counter += twice(clamp(1000));\n"),
        ("    scount += x;", "    scount += 2 * x;"),
    ])
    out = tmp_path / "run2.opus"
    res = build_bundle(COUNTER, diff, counter_bins["pie"], out, cflags=CFLAGS)
    assert res.functions_replaced == ["handle", "helper"]
    p = run_patched(counter_bins["pie"], out, preload, tmp_path, "aaa", "bb", "c")
    assert p.returncode == 0, p.stderr
    # "aaa" rejected; "bb": +200, helper: scount=1+4=5 -> counter 205; "c": +200, scount=7
    assert p.stdout == "counter=412 scount=7 last=c hits=2 twice=824\n"


MULTI = DATA / "multi" / "src"


@pytest.fixture(scope="module", params=["in-tree", "out-of-tree", "cmake"])
def multi_build(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The two-file program built from a copy, with its compile_commands.json: compiled in
    the source directory, or in a separate build directory with ../src paths."""
    d = tmp_path_factory.mktemp("multi")
    src = d / "src"
    shutil.copytree(MULTI, src)
    objs = d / "obj"
    objs.mkdir()
    if request.param == "in-tree":
        workdir, prefix, inc = src, "", "-Iinclude"
    elif request.param == "out-of-tree":
        workdir, prefix, inc = d / "build", "../src/", "-I../src/include"
        workdir.mkdir()
    else:  # CMake: absolute paths everywhere, a "command" string, a build directory
        workdir, prefix, inc = d / "build", f"{src}/", f"-I{src}/include"
        workdir.mkdir()
    cmds = []
    for f in ("main.c", "util.c"):
        args = ["gcc", *CFLAGS, "-fPIE", inc, "-Wall", "-c", "-o",
                str(objs / f.replace(".c", ".o")), prefix + f]
        subprocess.run(args, cwd=workdir, check=True)
        if request.param == "cmake":
            cmds.append({"directory": str(workdir), "file": prefix + f,
                         "command": " ".join(["/usr/bin/cc", *args[1:]])})
        else:
            cmds.append({"directory": str(workdir), "file": prefix + f, "arguments": args})
    binary = d / "multi"
    subprocess.run(["gcc", "-pie", "-o", str(binary), str(objs / "main.o"),
                    str(objs / "util.o")], check=True)
    cdb = d / "compile_commands.json"
    cdb.write_text(json.dumps(cmds))
    return src, binary, cdb


def test_multi_file_patch(multi_build, preload, make_diff, tmp_path: Path) -> None:
    src, binary, cdb = multi_build
    base = subprocess.run([str(binary), "x"], capture_output=True, text=True, check=True)
    assert base.stdout == "main.count=3 util.count=2 total=9\n"
    d1 = make_diff([("    count++;", "    count += 10;")], rel="util.c", src=src)
    d2 = make_diff([("    count += i;", "    count += 100 * i;")], rel="main.c", src=src)
    both = tmp_path / "both.diff"
    both.write_text(d1.read_text() + d2.read_text())
    out = tmp_path / "multi.opus"
    res = build_bundle(src, both, binary, out, compile_commands=cdb)
    m = res.manifest
    assert sorted((f.name, f.file) for f in m.functions) == [("bump", "util.c"),
                                                              ("step", "main.c")]
    got = sorted((b.symbol, b.binding, b.file) for b in m.bindings)
    assert got == [("bump", "global", "main.c"), ("count", "static", "main.c"),
                   ("count", "static", "util.c"), ("scale", "static", "util.c"),
                   ("total", "global", "util.c")]
    assert len({b.slot for b in m.bindings}) == 5  # unique slot names across the TUs
    p = run_patched(binary, out, preload, tmp_path, "x")
    assert p.stdout == "main.count=300 util.count=20 total=9\n", p.stderr


def test_header_change_selects_the_right_tu(multi_build, preload, make_diff,
                                             tmp_path: Path) -> None:
    src, binary, cdb = multi_build
    diff = make_diff([("#define SCALE 3", "#define SCALE 4")], rel="include/util.h", src=src)
    out = tmp_path / "hdr.opus"
    res = build_bundle(src, diff, binary, out, compile_commands=cdb)
    assert [(f.name, f.file, f.static) for f in res.manifest.functions] == [
        ("scale", "util.c", True)]
    assert list(res.changes) == ["util.c"]
    p = run_patched(binary, out, preload, tmp_path, "x")
    assert p.stdout == "main.count=3 util.count=2 total=12\n", p.stderr


def test_header_change_with_absolute_include_cflags(multi_build, make_diff,
                                                    tmp_path: Path) -> None:
    src, binary, _ = multi_build
    diff = make_diff([("#define SCALE 3", "#define SCALE 5")], rel="include/util.h", src=src)
    res = build_bundle(src, diff, binary, tmp_path / "abs.opus",
                       cflags=[*CFLAGS, "-fPIE", f"-I{src / 'include'}"])
    assert [f.name for f in res.manifest.functions] == ["scale"]


def test_unoptimized_target(preload, make_diff, tmp_path: Path) -> None:
    # -O0: nothing is inlined (twice/clamp have symbols: slots, not copies)
    binary = tmp_path / "server_O0"
    subprocess.run(["gcc", "-O0", "-g", "-o", str(binary), "server.c"], cwd=COUNTER, check=True)
    diff = make_diff([("    counter += helper((int)strlen(req));",
                       "    counter += twice(helper((int)strlen(req)));")])
    out = tmp_path / "o0.opus"
    res = build_bundle(COUNTER, diff, binary, out, cflags=["-O0", "-g"])
    assert res.manifest.added_functions == []
    assert {b.symbol for b in res.manifest.bindings} >= {"twice", "helper", "counter"}
    p = run_patched(binary, out, preload, tmp_path, "aaa", "bb")
    # helper: scount 4 then 6; counter += 8, then += 12
    assert p.stdout == "counter=20 scount=6 last=bb hits=2 twice=40\n", p.stderr


IFDEF_SRC = """\
#include <stdio.h>
static int total;
#ifdef FAST
static int __attribute__((noinline)) step(int x)
{
    return x;
}
#else
static int __attribute__((noinline)) step(int x)
{
    total += x;
    return total;
}
#endif
int __attribute__((noinline)) (twice)(int x)
{
    int r = 2 * step(x);
    if (r > 999)
        puts("big");
    return r;
}
int main(int argc, char **argv)
{
    (void)argv;
    int r = twice(argc);
    printf("%d %d\\n", r, total);
    return 0;
}
"""


def test_definition_chosen_by_preprocessor_and_parenthesized_name(preload, tmp_path: Path
                                                                    ) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.c").write_text(IFDEF_SRC)
    binary = tmp_path / "p"
    subprocess.run(["gcc", *CFLAGS, "-o", str(binary), "p.c"], cwd=src, check=True)
    new = (IFDEF_SRC.replace("    total += x;\n    return total;", "    total += 10 * x;\n"
                                                                  "    return total;")
           .replace("int r = 2 * step(x);", "int r = 3 * step(x);"))
    from buildharness import unified_diff
    diff = tmp_path / "p.diff"
    diff.write_text(unified_diff(src, "p.c", new))
    out = tmp_path / "p.opus"
    res = build_bundle(src, diff, binary, out, cflags=CFLAGS)
    assert res.functions_replaced == ["step", "twice"]
    assert subprocess.run([str(binary), "x"], capture_output=True, text=True).stdout == "4 2\n"
    p = run_patched(binary, out, preload, tmp_path, "x")
    assert p.stdout == "60 20\n", p.stderr
