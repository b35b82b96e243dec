"""--build: compile commands captured from the program's own build (real make and cmake), and
the bundle built from them runs (the in-process harness of test_build_run applies it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from buildharness import DATA, unified_diff
from test_build_run import preload, run_patched  # noqa: F401 - preload is a fixture

from opus_bpf import cli
from opus_bpf.patchbuild.capture import capture_compile_commands
from opus_bpf.patchbuild.errors import BuildError
from opus_bpf.patchbuild.gate import build_checked

CMAKE_BUILD = "cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build"


def _project(name: str, tmp: Path, build: str) -> Path:
    """A copy of tests/build/data/<name>, built in place as its user would."""
    src = tmp / name
    shutil.copytree(DATA / name, src)
    subprocess.run(build, shell=True, cwd=src, check=True, capture_output=True)
    return src


def _fix(src: Path, tmp: Path) -> Path:
    rel = "src/tally.c"
    text = (src / rel).read_text().replace("* TALLY_WEIGHT;", "* TALLY_WEIGHT * 100;")
    p = tmp / "fix.diff"
    p.write_text(unified_diff(src, rel, text))
    return p


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_project_captured_and_patched(tmp_path: Path, preload: Path) -> None:  # noqa: F811
    src = _project("makeproj", tmp_path, "make")
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    cap = capture_compile_commands(src, "make -j2", workdir=tmp_path / "cap")
    assert cap.captured and cap.entries == 2
    # --src untouched: the build ran in a copy (and recompiled everything there)
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == before
    entries = {e["file"]: e for e in json.loads(cap.path.read_text())}
    assert set(entries) == {"src/main.c", "src/tally.c"}
    e = entries["src/tally.c"]
    assert e["directory"] == str(src)  # rebased from the copy to --src
    assert "-DTALLY_WEIGHT=3" in e["arguments"] and "-Iinclude" in e["arguments"]

    out = tmp_path / "fix.opus"
    res, _ = build_checked(src, _fix(src, tmp_path), src / "tally", out,
                           compile_commands=cap.path, accept_review=True)
    assert res.functions_replaced == ["tally_add"]
    p = run_patched(src / "tally", out, preload, tmp_path, "ab", "c")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "tally total=900\n"  # 3 letters * 3 * 100: the captured -D reached it


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_project_via_cli(tmp_path: Path, preload: Path, capsys) -> None:  # noqa: F811
    src = _project("cmakeproj", tmp_path, CMAKE_BUILD)
    out = tmp_path / "fix.opus"
    rc = cli.main(["build", "--src", str(src), "--patch", str(_fix(src, tmp_path)),
                   "--binary", str(src / "build" / "tally"), "--build", CMAKE_BUILD,
                   "--accept-review", "-o", str(out), "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["compile_commands"]["captured"] is True
    assert d["functions_replaced"] == ["tally_add"]
    p = run_patched(src / "build" / "tally", out, preload, tmp_path, "ab", "c")
    assert p.stdout == "tally total=1500\n"  # TALLY_WEIGHT=5 comes from CMakeLists.txt only


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_existing_compile_commands_reused(tmp_path: Path) -> None:
    src = _project("cmakeproj", tmp_path, CMAKE_BUILD + " -- -j1 && cmake -S . -B build "
                   "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON")
    cap = capture_compile_commands(src, "false")  # the build command is not even run
    assert not cap.captured and cap.path == src / "build" / "compile_commands.json"
    out = tmp_path / "fix.opus"
    res, _ = build_checked(src, _fix(src, tmp_path), src / "build" / "tally", out,
                           compile_commands=cap.path, accept_review=True)
    assert res.functions_replaced == ["tally_add"]


def test_failing_build_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "broken"
    shutil.copytree(DATA / "makeproj", src)
    (src / "src" / "main.c").write_text("int main(void) { return nosuch; }\n")
    with pytest.raises(BuildError) as ei:
        capture_compile_commands(src, "make", workdir=tmp_path / "cap")
    assert "failed" in ei.value.message and "nosuch" in ei.value.message
    assert "\n" not in ei.value.message


def test_build_that_compiles_nothing(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.mkdir()
    (src / "a.c").write_text("int x;\n")
    with pytest.raises(BuildError, match="compiled no C file"):
        capture_compile_commands(src, "true", workdir=tmp_path / "cap")


def test_out_of_tree_build_directory(tmp_path: Path) -> None:
    """configure run in a build directory of the copy (libexpat's expat/build): the sources
    and the tree's include directories map back to --src (where the build patches and reads
    them); the build directory itself (generated config.h) stays in the copy."""
    from opus_bpf.patchbuild.capture import _rebase_entry

    src, copy = tmp_path / "src", tmp_path / "copy"
    for root in (src, copy):
        (root / "expat" / "lib").mkdir(parents=True)
        (root / "expat" / "lib" / "xmlparse.c").write_text("int x;\n")
    (copy / "expat" / "build" / "lib").mkdir(parents=True)
    bdir = copy / "expat" / "build" / "lib"
    e = {"directory": str(bdir), "file": "../../lib/xmlparse.c",
         "arguments": ["gcc", "-I.", "-I..", "-I../../lib", "-I", "../..", "-fPIC", "-c",
                       "../../lib/xmlparse.c", "-o", ".libs/xmlparse.o"]}
    got = _rebase_entry(e, copy, src)
    want_file = str(src / "expat" / "lib" / "xmlparse.c")
    assert got["directory"] == str(bdir)
    assert got["file"] == want_file and want_file in got["arguments"]
    assert f"-I{bdir}" in got["arguments"]  # generated headers: the build copy's
    assert f"-I{bdir.parent}" in got["arguments"]
    assert f"-I{src / 'expat' / 'lib'}" in got["arguments"]
    assert got["arguments"][got["arguments"].index("-I") + 1] == str(src / "expat")


def test_generated_include_directory_in_unbuilt_src(tmp_path: Path) -> None:
    """--src never built (an apt-get source tree): -I objs (nginx's generated headers) exists
    only in the build copy and must point there."""
    from opus_bpf.patchbuild.capture import _rebase_entry

    src, copy = tmp_path / "src", tmp_path / "copy"
    for root in (src, copy):
        (root / "src" / "core").mkdir(parents=True)
        (root / "src" / "core" / "nginx.c").write_text("int x;\n")
    (copy / "objs").mkdir()
    e = {"directory": str(copy), "file": "src/core/nginx.c",
         "arguments": ["cc", "-I", "src/core", "-I", "objs", "-c", "-o", "objs/nginx.o",
                       "src/core/nginx.c"]}
    got = _rebase_entry(e, copy, src)
    assert got["directory"] == str(src) and got["file"] == "src/core/nginx.c"
    args = got["arguments"]
    assert args[args.index("-I") + 1] == "src/core"
    assert str(copy / "objs") in args
