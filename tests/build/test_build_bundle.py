"""build_bundle end to end with real gcc: manifest, slots, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from buildharness import CFLAGS, COUNTER, DATA
from elftools.elf.elffile import ELFFile

from opus_bpf.bundle import read_bundle
from opus_bpf.patchbuild import BuildError, build_bundle

FIX = DATA / "counter" / "fix.diff"


def so_symbols(so_bytes: bytes, tmp: Path) -> dict[str, str]:
    p = tmp / "patch.so"
    p.write_bytes(so_bytes)
    with open(p, "rb") as f:
        elf = ELFFile(f)
        return {s.name: s["st_info"]["type"] for s in elf.get_section_by_name(".symtab")
                .iter_symbols() if s.name and s["st_shndx"] != "SHN_UNDEF"}


def bindings(manifest) -> dict[str, tuple[str, str, str | None, str]]:
    return {b.slot: (b.symbol, b.binding, b.function, b.kind) for b in manifest.bindings}


@pytest.mark.parametrize("kind", ["nopie", "pie"])
def test_counter_fix(kind: str, counter_bins: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fix.opus"
    res = build_bundle(COUNTER, FIX, counter_bins[kind], out, cflags=CFLAGS)
    assert res.output == out and out.exists()
    assert res.functions_replaced == ["handle"] and res.functions_added == []
    assert res.compile_seconds > 0
    m = read_bundle(out).manifest
    assert m.id == res.bundle_id and len(m.id) == 12
    assert m.name == "fix"
    assert m.target.elf_type == ("EXEC" if kind == "nopie" else "DYN")
    assert m.target.path == str(counter_bins[kind].resolve())
    assert len(m.target.build_id) == 40
    f = m.functions[0]
    assert (f.name, f.file, f.static, f.new_symbol, f.source_path) == (
        "handle", "server.c", False, "handle", "server.c")
    assert bindings(m) == {
        "__opus_ref_counter": ("counter", "global", None, "object"),
        "__opus_ref_st": ("st", "static", None, "object"),
        "__opus_ref_helper": ("helper", "static", None, "function"),
        "__opus_ref_last": ("last", "static", None, "object"),
        "__opus_ref_handle__calls": ("calls", "local-static", "handle", "object"),
    }
    assert res.bindings_count == 5
    local = next(b for b in m.bindings if b.binding == "local-static")
    assert local.target_symbol == "calls.0" and local.file == "server.c"
    # libc stays a dynamic reference, not a slot
    assert not any(b.symbol in ("strlen", "strncpy") for b in m.bindings)
    syms = so_symbols(read_bundle(out).so_bytes, tmp_path)
    for b in m.bindings:
        assert syms[b.slot] == "STT_OBJECT"
    assert syms["handle"] == "STT_FUNC"
    assert m.build.cflags == CFLAGS and "gcc" in m.build.compiler
    d = json.loads(json.dumps(res.to_dict()))
    assert d["bundle_id"] == m.id and d["functions_replaced"] == ["handle"]
    assert d["manifest"]["bindings"][0]["slot"].startswith("__opus_ref_")
    assert res.summary().startswith(f"{out}: bundle {m.id}, replaces handle, 5 bindings")


def test_patch_object_is_loadable_shape(counter_bins: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fix.opus"
    build_bundle(COUNTER, FIX, counter_bins["nopie"], out, cflags=CFLAGS)
    so = tmp_path / "p.so"
    so.write_bytes(read_bundle(out).so_bytes)
    with open(so, "rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_type == "ET_DYN"
        assert not any(s.header.p_type == "PT_TLS" for s in elf.iter_segments())
        for name in (".init_array", ".ctors", ".preinit_array"):
            sec = elf.get_section_by_name(name)
            assert sec is None or sec.header.sh_size == 0
        assert elf.get_section_by_name(".debug_info") is not None  # -g kept, not stripped
        cu = next(elf.get_dwarf_info().iter_CUs()).get_top_DIE()
        assert cu.attributes["DW_AT_comp_dir"].value.decode() == str(COUNTER)  # not the tmp copy
        # the unchanged functions and the target's globals are not copied into the patch
        names = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()}
        assert not {"report", "main", "counter", "scount"} & names


def test_generated_tu(counter_bins: dict[str, Path], tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    build_bundle(COUNTER, FIX, counter_bins["nopie"], tmp_path / "x.opus", cflags=CFLAGS,
                 keep_dir=keep)
    tu = (keep / "tree" / "server.c").read_text()
    assert "static __typeof__(counter) *__opus_ref_counter __attribute__((used));" in tu
    assert "#define counter (*__opus_ref_counter)" in tu and "#undef counter" in tu
    assert "static int *__opus_ref_handle__calls __attribute__((used));" in tu
    assert "static int calls;" not in tu  # the local static became a slot
    assert "int __attribute__((noinline)) report(void)\n;" in tu
    assert "#include \"server.h\"" in tu  # original text, not preprocessed
    # line numbers of the changed function are those of the new source
    new_lines = (keep / "tree" / "server.c").read_text().splitlines()
    i = next(k for k, ln in enumerate(new_lines) if ln.startswith("int __attribute__((noinline))"
                                                                  " handle"))
    assert new_lines[i - 1] == "#line 36"


def test_p0_diff_and_compile_commands(counter_bins: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(COUNTER, src)
    p0 = tmp_path / "p0.diff"
    p0.write_text(FIX.read_text().replace("--- a/server.c", "--- server.c")
                  .replace("+++ b/server.c", "+++ server.c"))
    cdb = tmp_path / "compile_commands.json"
    cdb.write_text(json.dumps([{
        "directory": str(src), "file": "server.c",
        # a launcher (never run: it is skipped) and the compiler by path
        "arguments": ["ccache", "/usr/bin/gcc", *CFLAGS, "-I", str(src), "-Wall", "-Werror",
                      "-c", "-o", "server.o", "server.c"]}]))
    res = build_bundle(src, p0, counter_bins["nopie"], tmp_path / "cc.opus",
                       compile_commands=cdb)
    assert res.functions_replaced == ["handle"] and res.bindings_count == 5
    assert (src / "server.c").read_text() == (COUNTER / "server.c").read_text()  # untouched


def test_added_and_copied_functions(counter_bins, make_diff, tmp_path: Path) -> None:
    # twice() was inlined into report() by gcc -O2: the patch gets its own copy of it;
    # clamp() is a static inline without a symbol: also a copy. validate() is new.
    diff = make_diff([
        ("int __attribute__((noinline)) handle(const char *req)\n{",
         "static int validate(const char *req)\n{\n    return strlen(req) < sizeof(last);\n}\n\n"
         "int __attribute__((noinline)) handle(const char *req)\n{"),
        ("    calls++;\n", "    if (!validate(req))\n        return -1;\n"
                          "    calls = clamp(calls + twice(1));\n"),
    ])
    res = build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "a.opus",
                       cflags=CFLAGS)
    m = res.manifest
    assert [f.name for f in m.functions] == ["handle"]
    added = {(a.name, a.reason, a.static) for a in m.added_functions}
    assert added == {("validate", "new", True), ("twice", "copied", True),
                     ("clamp", "copied", True)}
    assert "__opus_ref_validate" not in bindings(m)  # new functions are called directly
    assert ", adds validate, copies inlined clamp, twice," in res.summary()
    syms = so_symbols(read_bundle(tmp_path / "a.opus").so_bytes, tmp_path)
    assert {"validate", "twice", "handle"} <= set(syms)


def test_patch_changing_helper_and_caller(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("    scount += x;", "    scount += x + 1;"),
                      ("    calls++;", "    calls += 2;")])
    res = build_bundle(COUNTER, diff, counter_bins["pie"], tmp_path / "b.opus", cflags=CFLAGS)
    assert res.functions_replaced == ["handle", "helper"]
    b = bindings(res.manifest)
    assert "__opus_ref_helper" not in b  # the new handle calls the new helper directly
    assert b["__opus_ref_scount"] == ("scount", "static", None, "object")
    f = {x.name: x for x in res.manifest.functions}
    assert f["helper"].static and not f["handle"].static


def test_refuses_shadowing_local(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("    calls++;", "    calls++;\n    { int last = 0; (void)last; }")])
    with pytest.raises(BuildError) as ei:
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "s.opus", cflags=CFLAGS)
    msg = ei.value.message
    assert "handle" in msg and "last" in msg and "rename" in msg and "\n" not in msg
    assert not (tmp_path / "s.opus").exists()


def test_refuses_shadowing_parameter(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("static int __attribute__((noinline)) helper(int x)\n{\n"
                       "    scount += x;",
                       "static int __attribute__((noinline)) helper(int counter)\n{\n"
                       "    scount += counter + (int)sizeof(last);\n"
                       "    { extern int counter; (void)counter; }")])
    with pytest.raises(BuildError, match="both the target's global variable"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "s.opus", cflags=CFLAGS)


def test_member_with_slot_name(counter_bins, make_diff, tmp_path: Path) -> None:
    # counter is a global (slot) and a member of struct stats: the uses are rewritten token
    # by token instead of with a #define that would also hit st.counter
    diff = make_diff([("    st.hits++;", "    st.hits++;\n    st.counter = counter;\n"
                                         "    (&st)->counter += counter;")])
    keep = tmp_path / "keep"
    res = build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "m.opus", cflags=CFLAGS,
                       keep_dir=keep)
    assert "__opus_ref_counter" in bindings(res.manifest)
    tu = (keep / "tree" / "server.c").read_text()
    assert "#define counter" not in tu
    assert "    st.counter = (*__opus_ref_counter);\n" in tu
    assert "    (&st)->counter += (*__opus_ref_counter);\n" in tu
    assert "    (*__opus_ref_counter) += helper((int)strlen(req));\n" in tu


def test_refuses_member_with_slot_name_in_macro(counter_bins, make_diff,
                                                tmp_path: Path) -> None:
    diff = make_diff([("int __attribute__((noinline)) handle(const char *req)\n{",
                       "#define BUMP() (counter++)\n"
                       "int __attribute__((noinline)) handle(const char *req)\n{"),
                      ("    st.hits++;", "    st.hits++;\n    st.counter = BUMP();")])
    with pytest.raises(BuildError, match=r"struct member .*macro expansions"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "m.opus", cflags=CFLAGS)


def test_refuses_main_inline_and_inlined(counter_bins, make_diff, tmp_path: Path) -> None:
    # clamp and twice have no symbol: gcc inlined them into report(), which must then be
    # replaced too (tests/build/test_reach.py); report reads the TLS `depth`: refused, and the
    # message says why report is in the patch at all
    cases = [
        ([("        handle(argv[i]);", "        handle(argv[i] + 0);")], "main is changed"),
        ([("return v > LIMIT ? LIMIT : v;", "return v >= LIMIT ? LIMIT : v;")],
         r"report uses thread-local depth.*report must be replaced too: it holds clamp "
         r"\(inlined\)"),
        ([("    return 2 * x;", "    return x + x + 0 * x;")],
         r"report uses thread-local depth.*it holds twice \(inlined\)"),
    ]
    for edits, pattern in cases:
        with pytest.raises(BuildError, match=pattern):
            build_bundle(COUNTER, make_diff(edits), counter_bins["nopie"],
                         tmp_path / "r.opus", cflags=CFLAGS)
    # without debug info nothing says where the copies went: refused as before
    nodebug = tmp_path / "server_nodebug"
    subprocess.run(["gcc", "-O2", "-o", str(nodebug), "server.c"], cwd=COUNTER, check=True)
    for edits, pattern in [
        ([("return v > LIMIT ? LIMIT : v;", "return v >= LIMIT ? LIMIT : v;")],
         "clamp .* is inline"),
        ([("    return 2 * x;", "    return x + x + 0 * x;")],
         "function twice has no symbol in .*inlined by the compiler"),
    ]:
        with pytest.raises(BuildError, match=pattern):
            build_bundle(COUNTER, make_diff(edits), nodebug, tmp_path / "r.opus", cflags=CFLAGS)


def test_refuses_tls(counter_bins, make_diff, tmp_path: Path) -> None:
    uses_target_tls = make_diff([("    calls++;", "    calls++;\n    depth++;")])
    with pytest.raises(BuildError, match="thread-local depth"):
        build_bundle(COUNTER, uses_target_tls, counter_bins["nopie"], tmp_path / "t.opus",
                     cflags=CFLAGS)
    new_tls = make_diff([("    static int calls;", "    static __thread int mine;\n"
                                                   "    static int calls;\n    mine++;")])
    with pytest.raises(BuildError, match="thread-local storage"):
        build_bundle(COUNTER, new_tls, counter_bins["nopie"], tmp_path / "t.opus",
                     cflags=CFLAGS)


def test_refuses_constructor(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("int __attribute__((noinline)) handle(const char *req)\n{",
                       "__attribute__((constructor)) static void boot(void)\n{\n"
                       "    counter = 0;\n}\n\n"
                       "int __attribute__((noinline)) handle(const char *req)\n{")])
    with pytest.raises(BuildError, match=r"\.init_array"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "c.opus", cflags=CFLAGS)


def test_refuses_ifunc(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("int __attribute__((noinline)) handle(const char *req)\n{",
                       "static int impl(void) { return 1; }\n"
                       "static int (*pick(void))(void) { return impl; }\n"
                       "static int fast(void) __attribute__((ifunc(\"pick\")));\n\n"
                       "int __attribute__((noinline)) handle(const char *req)\n{"),
                      ("    calls++;", "    calls += fast();")])
    with pytest.raises(BuildError, match="IRELATIVE"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "i.opus", cflags=CFLAGS)


def test_refuses_state_the_slots_missed(counter_bins, make_diff, tmp_path: Path) -> None:
    # cfront cannot see into asm operands: scount would be the patch's own copy
    asm = '    __asm__ volatile("incl %0" : "+m"(scount));'
    diff = make_diff([("    calls++;", "    calls++;\n" + asm)])
    with pytest.raises(BuildError, match="defines its own copy of scount"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "e.opus", cflags=CFLAGS)


def test_patch_that_does_not_apply(counter_bins, tmp_path: Path) -> None:
    bad = tmp_path / "bad.diff"
    bad.write_text(FIX.read_text().replace(" int __attribute__((noinline)) handle(const char "
                                           "*req)\n {\n     static int calls;\n",
                                           " int other(void)\n {\n     static int x;\n"))
    with pytest.raises(BuildError) as ei:
        build_bundle(COUNTER, bad, counter_bins["nopie"], tmp_path / "x.opus", cflags=CFLAGS)
    assert "server.c hunk #1 FAILED" in ei.value.message


def test_diff_naming_missing_files(counter_bins, tmp_path: Path) -> None:
    bad = tmp_path / "bad.diff"
    bad.write_text(FIX.read_text().replace("server.c", "nothere.c"))
    with pytest.raises(BuildError, match="not found under the source tree"):
        build_bundle(COUNTER, bad, counter_bins["nopie"], tmp_path / "x.opus", cflags=CFLAGS)


def test_wrong_binary(tmp_path: Path, counter_bins) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.c").write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-O2", "-g", "-o", "o", "o.c"], cwd=other, check=True)
    with pytest.raises(BuildError, match="no STT_FILE symbol for server.c"):
        build_bundle(COUNTER, FIX, other / "o", tmp_path / "x.opus", cflags=CFLAGS)
    subprocess.run(["strip", "o"], cwd=other, check=True)
    with pytest.raises(BuildError, match="stripped"):
        build_bundle(COUNTER, FIX, other / "o", tmp_path / "x.opus", cflags=CFLAGS)
    with pytest.raises(BuildError, match="cannot read target binary"):
        build_bundle(COUNTER, FIX, other / "o.c", tmp_path / "x.opus", cflags=CFLAGS)


def test_comment_only_patch(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("    calls++;", "    calls++; /* count it */")])
    with pytest.raises(BuildError, match="changes no function body"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "x.opus", cflags=CFLAGS)


def test_header_change_reaches_users(counter_bins, make_diff, tmp_path: Path) -> None:
    # LIMIT is used by clamp (inline) and main: both refused, which proves the header change
    # was traced to the functions that expand it
    diff = make_diff([("#define LIMIT 100", "#define LIMIT 50")], rel="server.h")
    with pytest.raises(BuildError, match="main is changed|clamp"):
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "h.opus", cflags=CFLAGS)


def test_local_static_disambiguated_by_dwarf(make_diff, tmp_path: Path) -> None:
    src = DATA / "twostatics" / "src"
    binary = tmp_path / "two"
    subprocess.run(["gcc", *CFLAGS, "-o", str(binary), "two.c"], cwd=src, check=True)
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        sec_of = {s.name: elf.get_section(s["st_shndx"]).name
                  for s in elf.get_section_by_name(".symtab").iter_symbols()
                  if s.name.startswith("calls.")}
    for fn, section in (("first", ".data"), ("second", ".bss")):
        diff = make_diff([(f"{fn}(void)\n{{\n", f"{fn}(void)\n{{\n    puts(\"{fn}\");\n")],
                         rel="two.c", src=src)
        res = build_bundle(src, diff, binary, tmp_path / f"{fn}.opus", cflags=CFLAGS)
        (b,) = res.manifest.bindings
        assert (b.binding, b.function, b.symbol) == ("local-static", fn, "calls")
        assert sec_of[b.target_symbol] == section  # first's is initialized, second's is not
        assert res.warnings == []


def test_stripped_target_with_separate_debug_file(counter_bins, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "server"
    shutil.copy(counter_bins["pie"], binary)
    dbg = tmp_path / "server.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(dbg)], check=True)
    subprocess.run(["strip", "--strip-all", str(binary)], check=True)
    with pytest.raises(BuildError, match="stripped"):
        build_bundle(COUNTER, FIX, binary, tmp_path / "x.opus", cflags=CFLAGS)
    # by build-id under the debug root
    from opus_bpf.patchbuild.elfinfo import read_target
    root = tmp_path / "debugroot"
    bid = read_target(counter_bins["pie"]).build_id
    (root / ".build-id" / bid[:2]).mkdir(parents=True)
    shutil.copy(dbg, root / ".build-id" / bid[:2] / f"{bid[2:]}.debug")
    monkeypatch.setattr("opus_bpf.patchbuild.elfinfo.DEBUG_ROOT", root)
    res = build_bundle(COUNTER, FIX, binary, tmp_path / "x.opus", cflags=CFLAGS)
    assert res.bindings_count == 5
    assert res.manifest.target.build_id == bid
    # by .gnu_debuglink next to the binary
    monkeypatch.setattr("opus_bpf.patchbuild.elfinfo.DEBUG_ROOT", tmp_path / "none")
    subprocess.run(["objcopy", f"--add-gnu-debuglink={dbg}", str(binary)], check=True,
                   cwd=tmp_path)
    res = build_bundle(COUNTER, FIX, binary, tmp_path / "y.opus", cflags=CFLAGS)
    assert res.bindings_count == 5


def test_new_local_static_is_patch_state(counter_bins, make_diff, tmp_path: Path) -> None:
    # report() gains a static named like handle()'s calls.0: it is new state, not a binding
    diff = make_diff([("    depth++;\n", "    static int calls;\n    calls++;\n")])
    res = build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "n.opus", cflags=CFLAGS)
    assert res.functions_replaced == ["report"]
    assert not [b for b in res.manifest.bindings if b.binding == "local-static"]
    assert {b.symbol for b in res.manifest.bindings} == {"counter", "scount", "last", "st"}
    assert sorted((a.name, a.reason) for a in res.manifest.added_functions) == [
        ("clamp", "copied"), ("twice", "copied")]


def test_local_static_types(counter_bins, make_diff, tmp_path: Path) -> None:
    typeof = make_diff([("    static int calls;\n    calls++;",
                         "    static __typeof__(counter) calls;\n    calls++;")])
    with pytest.raises(BuildError, match="typeof"):
        build_bundle(COUNTER, typeof, counter_bins["nopie"], tmp_path / "t.opus", cflags=CFLAGS)
    local_typedef = make_diff([("    static int calls;\n    calls++;",
                                "    typedef int count_t;\n    static count_t calls;\n"
                                "    calls++;")])
    with pytest.raises(BuildError, match="typedef local to the function"):
        build_bundle(COUNTER, local_typedef, counter_bins["nopie"], tmp_path / "t.opus",
                     cflags=CFLAGS)


def test_changed_initializers_warn(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("static int scount = 1;", "static int scount = 2;"),
                      ("    static int calls;\n    calls++;", "    static int calls = 5;\n"
                                                            "    calls += 2;")])
    res = build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "w.opus", cflags=CFLAGS)
    text = "\n".join(res.warnings)
    assert "declaration of scount changed" in text
    assert "declaration of handle's static calls changed" in text


def test_compile_error_names_the_new_source_line(counter_bins, make_diff,
                                                 tmp_path: Path) -> None:
    diff = make_diff([("    calls++;", "    calls += no_such_variable;")])
    with pytest.raises(BuildError) as ei:
        build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "e.opus", cflags=CFLAGS)
    msg = ei.value.message
    assert msg.startswith("compiling the patch TU for server.c failed: server.c:39:")
    assert "no_such_variable" in msg and "\n" not in msg


def test_changed_struct_warns(counter_bins, make_diff, tmp_path: Path) -> None:
    diff = make_diff([("    int hits;\n};", "    int hits;\n    int misses;\n};"),
                      ("    calls++;", "    calls += 2;")])
    res = build_bundle(COUNTER, diff, counter_bins["nopie"], tmp_path / "s.opus", cflags=CFLAGS)
    assert any("struct stats changed" in w for w in res.warnings)
