"""Rebuild proof on real gcc builds: build-ids, loaded sections, the debug file adopted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from opus_bpf.distro.rebuild import (
    build_id,
    compare,
    debug_target,
    install_debug_file,
    likely_cause,
)
from opus_bpf.target.elf import load_elf

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("objcopy") is None, reason="needs gcc, objcopy"
)

SRC = r"""
#include <stdio.h>
static int counter;
int work(int x) { counter += x; return counter * VALUE; }
int main(int argc, char **argv) { (void)argv; printf("%d\n", work(argc)); return 0; }
"""

ID_A = "0x" + "11" * 20
ID_B = "0x" + "22" * 20


def _gcc(tmp: Path, name: str, build_id_arg: str, value: int = 3, extra: tuple = ()) -> Path:
    src = tmp / "prog.c"
    src.write_text(SRC)
    out = tmp / name
    subprocess.run(["gcc", "-O2", "-g", f"-DVALUE={value}", *extra, str(src), "-o", str(out),
                    f"-Wl,--build-id={build_id_arg}"], check=True, cwd=tmp)
    return out


def _split_debug(binary: Path) -> Path:
    """As dh_strip does: the debug file keeps DWARF + symbols, the binary is stripped."""
    dbg = binary.with_suffix(".debug")
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(dbg)], check=True)
    subprocess.run(["objcopy", "--strip-all", str(binary)], check=True)
    return dbg


def test_same_build_id_is_identical(tmp_path: Path) -> None:
    a = _gcc(tmp_path, "a", ID_A)
    b = _gcc(tmp_path, "b", ID_A)
    c = compare(a, b)
    assert c.same_build_id and c.usable and not c.differing
    assert c.installed_build_id == "11" * 20


def test_only_build_id_differs(tmp_path: Path) -> None:
    a = _gcc(tmp_path, "a", ID_A)
    b = _gcc(tmp_path, "b", ID_B)
    c = compare(a, b)
    assert not c.identical and not c.same_build_id
    assert c.differing == [] and c.usable
    assert "every loaded section is byte-identical" in c.describe()


def test_different_code_is_refused(tmp_path: Path) -> None:
    a = _gcc(tmp_path, "a", ID_A, value=3)
    b = _gcc(tmp_path, "b", ID_B, value=7)
    c = compare(a, b)
    assert not c.usable
    assert ".text" in c.differing
    assert "build dependency" in likely_cause(c.differing)
    assert ".text" in c.describe()


def test_adopted_debug_file_gives_symbols_of_stripped_binary(tmp_path: Path) -> None:
    installed = _gcc(tmp_path, "installed", ID_A)
    rebuilt = _gcc(tmp_path, "rebuilt", ID_B)
    _split_debug(installed).unlink()  # the installed binary's own debug file is not available
    rebuilt_dbg = _split_debug(rebuilt)
    before = installed.read_bytes()
    cmp = compare(installed, rebuilt)
    root = tmp_path / "debugroot"
    dest, adopted = install_debug_file(cmp, rebuilt_dbg, tmp_path, root=root)
    assert adopted and dest == debug_target("11" * 20, root)
    assert build_id(dest) == "11" * 20
    assert installed.read_bytes() == before  # never written
    # the debug file's symbols are the installed binary's: work() at the same address
    with_syms = load_elf(str(dest))
    orig = load_elf(str(_gcc(tmp_path, "again", ID_A)))  # unstripped twin of installed
    assert with_syms.function("work").value == orig.function("work").value
    # a second install finds the file in place
    assert install_debug_file(cmp, rebuilt_dbg, tmp_path, root=root) == (dest, False)


def test_refuses_to_install_for_different_code(tmp_path: Path) -> None:
    from opus_bpf.distro.errors import RebuildMismatch

    installed = _gcc(tmp_path, "installed", ID_A, value=3)
    rebuilt = _gcc(tmp_path, "rebuilt", ID_B, value=9)
    dbg = _split_debug(rebuilt)
    _split_debug(installed)
    with pytest.raises(RebuildMismatch):
        install_debug_file(compare(installed, rebuilt), dbg, tmp_path, root=tmp_path / "r")


def test_same_build_id_debug_file_installed_as_is(tmp_path: Path) -> None:
    installed = _gcc(tmp_path, "installed", ID_A)
    rebuilt = _gcc(tmp_path, "rebuilt", ID_A)
    _split_debug(installed).unlink()
    dbg = _split_debug(rebuilt)
    dest, adopted = install_debug_file(compare(installed, rebuilt), dbg, tmp_path,
                                       root=tmp_path / "root")
    assert not adopted and dest.read_bytes() == dbg.read_bytes()
