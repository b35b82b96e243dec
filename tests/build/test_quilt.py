"""Quilt series: `build --patch debian/patches/series --pick NAME` builds NAME against the tree
as the series leaves it just before NAME, whatever state --src is in (pristine, built from the
series up to NAME, fully patched with or without quilt's .pc/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from buildharness import COUNTER, DATA, gcc, unified_diff

from opus_bpf.cli import main
from opus_bpf.patchbuild import BuildError
from opus_bpf.patchbuild.quilt import looks_like_series, prepare_before, read_series

FIX = DATA / "counter" / "fix.diff"


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.fixture
def series(tmp_path: Path) -> dict[str, Path]:
    """A Debian-style source tree: upstream (COUNTER), debian/patches/series with a patch
    before the fix (moves every line: the fix applies with an offset), the fix, and one after
    it that depends on it; plus the trees a user may have."""
    up = tmp_path / "upstream"
    shutil.copytree(COUNTER, up)
    patches = up / "debian" / "patches"
    patches.mkdir(parents=True)
    text = (up / "server.c").read_text()
    first = _edit(text, "#include <stdio.h>\n",
                  "#include <stdio.h>\n/* Debian: built with the distribution's flags */\n"
                  "/* (two lines, so the fix below applies with an offset) */\n")
    (patches / "01-header-note.patch").write_text(unified_diff(up, "server.c", first))
    (patches / "02-fix.patch").write_text(FIX.read_text())
    (patches / "series").write_text("# Debian series\n01-header-note.patch\n02-fix.patch -p1\n"
                                    "03-after-fix.patch\n")
    # the state each user has: before = upstream + 01 (what the binary was built from)
    before = tmp_path / "before"
    shutil.copytree(up, before)
    (before / "server.c").write_text(first)
    subprocess.run(["patch", "-p1", "-s", "-i", str(patches / "02-fix.patch")], cwd=before,
                   check=True)
    fixed = (before / "server.c").read_text()
    after = _edit(fixed, "calls += 10;", "calls += 20;")
    (patches / "03-after-fix.patch").write_text(unified_diff(before, "server.c", after))
    (before / "server.c").write_text(first)
    full = tmp_path / "full"  # apt-get source: everything applied, quilt's record in .pc/
    shutil.copytree(before, full)
    (full / "server.c").write_text(after)
    (full / ".pc").mkdir()
    (full / ".pc" / "applied-patches").write_text(
        "01-header-note.patch\n02-fix.patch\n03-after-fix.patch\n")
    nopc = tmp_path / "full-nopc"  # everything applied, no .pc/ (a tarball of the tree)
    shutil.copytree(full, nopc)
    shutil.rmtree(nopc / ".pc")
    binary = gcc(before, tmp_path / "server", "-fPIE", "-pie")
    return {"upstream": up, "before": before, "full": full, "nopc": nopc, "binary": binary,
            "series": patches / "series", "first": first}  # type: ignore[dict-item]


def test_read_series(series) -> None:
    got = [(p.name, p.level) for p in read_series(series["series"])]
    assert got == [("01-header-note.patch", 1), ("02-fix.patch", 1), ("03-after-fix.patch", 1)]
    assert looks_like_series(series["series"])
    assert not looks_like_series(FIX)


@pytest.mark.parametrize("state", ["upstream", "before", "full", "nopc"])
def test_before_tree_from_any_state(series, tmp_path: Path, state: str) -> None:
    fix, steps = prepare_before(series[state], series["series"], "02-fix.patch",
                                tmp_path / "out")
    assert fix.name == "02-fix.patch"
    assert (tmp_path / "out" / "server.c").read_text() == series["first"]
    assert steps == {
        "upstream": ["applied 01-header-note.patch"],
        "before": [],
        "full": ["reverted 03-after-fix.patch", "reverted 02-fix.patch"],
        "nopc": ["reverted 03-after-fix.patch", "reverted 02-fix.patch"],
    }[state]
    assert (series[state] / "server.c").exists()  # --src itself is never written
    if state == "full":
        assert "calls += 20;" in (series["full"] / "server.c").read_text()


@pytest.mark.parametrize("state", ["upstream", "full"])
def test_build_pick_from_series(series, tmp_path: Path, capsys, state: str) -> None:
    out = tmp_path / "fix.opus"
    rc = main(["build", "--src", str(series[state]), "--patch", str(series["series"]),
               "--pick", "02-fix.patch", "--binary", str(series["binary"]), "--cflags",
               "-O2 -g", "--accept-review", "-o", str(out), "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["functions_replaced"] == ["handle"]
    assert d["series"]["pick"] == "02-fix.patch" and d["series"]["steps"]
    assert out.exists()


def test_series_refusals(series, tmp_path: Path, capsys) -> None:
    with pytest.raises(BuildError, match="not in .*did you mean: 02-fix.patch"):
        prepare_before(series["upstream"], series["series"], "fix", tmp_path / "a")
    rc = main(["build", "--src", str(series["upstream"]), "--patch", str(series["series"]),
               "--binary", str(series["binary"]), "--cflags", "-O2 -g", "-o",
               str(tmp_path / "x.opus")])
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert "quilt series" in err and "--pick NAME" in err and "\n" not in err
    # a tree where the patch before the fix cannot apply: named
    bad = tmp_path / "bad"
    shutil.copytree(series["upstream"], bad)
    (bad / "server.c").write_text((bad / "server.c").read_text()
                                  .replace("#include <stdio.h>\n", "#include <stdio.h> \n"))
    with pytest.raises(BuildError, match="01-header-note.patch .*neither applies"):
        prepare_before(bad, series["series"], "02-fix.patch", tmp_path / "b")


def test_pure_addition_already_applied(tmp_path: Path) -> None:
    """A patch that only adds lines applies a second time at an offset (nginx's
    ssl_cert_cb_yield.patch does on its own tree): the exact reverse match wins."""
    block = "".join(f"    line{i};\n" for i in range(4))
    up = tmp_path / "up"
    up.mkdir()
    (up / "f.c").write_text(f"void a(void) {{\n{block}}}\nvoid b(void) {{\n{block}}}\n")
    patches = tmp_path / "patches"
    patches.mkdir()
    added = (up / "f.c").read_text().replace("    line1;\n", "    line1;\n    extra();\n", 1)
    (patches / "add.patch").write_text(unified_diff(up, "f.c", added))
    (patches / "fix.patch").write_text(unified_diff(up, "f.c", added).replace("extra", "xtra"))
    (patches / "series").write_text("add.patch\nfix.patch\n")
    built = tmp_path / "built"  # the tree with add.patch, as the binary was built
    shutil.copytree(up, built)
    (built / "f.c").write_text(added)
    _, steps = prepare_before(built, patches / "series", "fix.patch", tmp_path / "out")
    assert steps == [] and (tmp_path / "out" / "f.c").read_text() == added
    _, steps = prepare_before(up, patches / "series", "fix.patch", tmp_path / "out2")
    assert steps == ["applied add.patch"] and (tmp_path / "out2" / "f.c").read_text() == added


def test_pick_moves_compile_commands_to_the_before_tree(series, tmp_path: Path,
                                                        capsys) -> None:
    """compile_commands.json of --src (here the fully patched tree) is moved to the "before"
    copy: the old TU compared is the one before the fix, not --src's fixed one."""
    full = series["full"]
    cc = tmp_path / "compile_commands.json"
    cc.write_text(json.dumps([{"directory": str(full), "file": str(full / "server.c"),
                               "arguments": ["gcc", "-O2", "-g", "-c", str(full / "server.c"),
                                             "-o", "server.o"]}]))
    rc = main(["build", "--src", str(full), "--patch", str(series["series"]),
               "--pick", "02-fix.patch", "--binary", str(series["binary"]),
               "--compile-commands", str(cc), "--accept-review", "-o",
               str(tmp_path / "fix.opus"), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["functions_replaced"] == ["handle"]
