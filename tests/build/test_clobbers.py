"""Caller-saved clobber sets and the -fipa-ra hazard, checked on real gcc -O2 output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from opus_bpf.patchbuild.clobbers import (
    CALLER_SAVED,
    REGS,
    built_without_ipa_ra,
    clobbered_registers,
    insn_writes,
    ipa_ra_risk,
    parse_line,
    producer_uses_ipa_ra,
    proven_clobbers,
)

DATA = Path(__file__).parent / "data" / "clobbers"
GPR_SCRATCH = {"rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"}

if shutil.which("gcc") is None or shutil.which("objdump") is None:
    pytest.skip("needs gcc and objdump", allow_module_level=True)


def gcc(out: Path, *args: str) -> str:
    subprocess.run(["gcc", *args, "-o", str(out)], check=True, cwd=DATA)
    return str(out)


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("clobbers")
    return {
        "pie": gcc(d / "funcs", "-O2", "-g", "funcs.c"),
        "nopie": gcc(d / "funcs_nopie", "-O2", "-g", "-no-pie", "-fno-pie", "funcs.c"),
        "noipara": gcc(d / "funcs_noipara", "-O2", "-g", "-fno-ipa-ra", "funcs.c"),
        "o1": gcc(d / "funcs_o1", "-O1", "-g", "funcs.c"),
        "nodebug": gcc(d / "funcs_nodebug", "-O2", "funcs.c"),
        "new": gcc(d / "new.so", "-O2", "-g", "-fPIC", "-shared", "newleaf.c"),
        "same": gcc(d / "same.so", "-O2", "-g", "-fPIC", "-shared", "-DSAME", "newleaf.c"),
        "demo": gcc(d / "demo", "-O2", "-g", "demo.c", "demo_v2.c"),
        "demo_safe": gcc(d / "demo_safe", "-O2", "-g", "-fno-ipa-ra", "demo.c", "demo_v2.c"),
    }


def sym(path: str, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if isinstance(sec, SymbolTableSection):
                for s in sec.get_symbol_by_name(name) or []:
                    if s.entry.st_info.type == "STT_FUNC" and s.entry.st_size:
                        return s.entry.st_value, s.entry.st_size
    raise AssertionError(f"{name} not in {path}")


def clob(path: str, name: str) -> frozenset[str] | None:
    return clobbered_registers(path, *sym(path, name))


def risk(old: str, new: str, name: str, new_name: str | None = None) -> frozenset[str]:
    return ipa_ra_risk(old, *sym(old, name), new, *sym(new, new_name or name))


def disasm(path: str, name: str) -> str:
    addr, size = sym(path, name)
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "att",
                           f"--start-address={addr:#x}", f"--stop-address={addr + size:#x}",
                           path], capture_output=True, text=True, check=True).stdout


# ---- one function -----------------------------------------------------------------------------

def test_leaf_x_plus_1_writes_only_rax(bins: dict[str, str]) -> None:
    # gcc -O2: `lea 0x1(%rdi),%eax; ret`
    assert clob(bins["pie"], "leaf") == {"rax"}
    assert clob(bins["nopie"], "leaf") == {"rax"}


def test_calling_printf_is_everything(bins: dict[str, str]) -> None:
    assert "printf@plt" in disasm(bins["pie"], "say")
    assert clob(bins["pie"], "say") == CALLER_SAVED


def test_indirect_call_is_everything(bins: dict[str, str]) -> None:
    assert "call   *" in disasm(bins["pie"], "indirect")
    assert clob(bins["pie"], "indirect") == CALLER_SAVED


def test_call_to_static_leaf_adds_its_registers(bins: dict[str, str]) -> None:
    busy = clob(bins["pie"], "busy")
    via = clob(bins["pie"], "via_static")
    assert busy is not None and via is not None
    assert "busy" in disasm(bins["pie"], "via_static")
    assert len(busy & GPR_SCRATCH) >= 3, busy  # a loop with four live values
    assert busy <= via != CALLER_SAVED
    # via_static's own code writes only rax/rdx: the rest come from busy
    assert via - busy <= {"rax", "rdx"}


def test_depth_zero_does_not_follow_calls(bins: dict[str, str]) -> None:
    assert clobbered_registers(bins["pie"], *sym(bins["pie"], "via_static"), depth=0) \
        == CALLER_SAVED


@pytest.mark.parametrize("kind", ["pie", "nopie"])
def test_switch_jump_table_is_not_a_tail_call(bins: dict[str, str], kind: str) -> None:
    # PIE: lea table(%rip); movslq; add; jmp *%rax -- non-PIE: jmp *table(,%rdi,8)
    text = disasm(bins[kind], "dispatch")
    assert re.search(r"jmp\s+\*", text)
    got = clob(bins[kind], "dispatch")
    assert got is not None and got != CALLER_SAVED
    assert got <= {"rax", "rcx", "rdx", "rsi", "rdi"}


def test_not_disassemblable_is_none(bins: dict[str, str], tmp_path: Path) -> None:
    assert clobbered_registers(bins["pie"], 0x10, 0x10) is None
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an elf")
    assert clobbered_registers(str(junk), 0x1000, 4) is None


# ---- instruction semantics --------------------------------------------------------------------

@pytest.mark.parametrize(("line", "want"), [
    ("  10:\tlea    0x1(%rdi),%eax", {"rax"}),
    ("  10:\tmov    %r8d,(%rsi)", set()),
    ("  10:\tmovzbl %r9b,%r10d", {"r10"}),
    ("  10:\tadd    %ecx,%r11w", {"r11"}),
    ("  10:\tcmp    %eax,%edi", set()),
    ("  10:\ttest   %cl,%cl", set()),
    ("  10:\tpush   %rdi", set()),
    ("  10:\tpop    %rcx", {"rcx"}),
    ("  10:\tpop    %rbx", set()),  # callee-saved never count
    ("  10:\tsete   %dl", {"rdx"}),
    ("  10:\tcmovne %esi,%eax", {"rax"}),
    ("  10:\tdiv    %ecx", {"rax", "rdx"}),
    ("  10:\timul   %esi", {"rax", "rdx"}),
    ("  10:\timul   $0x3,%edi,%eax", {"rax"}),
    ("  10:\tmulb   %cl", {"rax"}),
    ("  10:\tcqto", {"rdx"}),
    ("  10:\tcltq", {"rax"}),
    ("  10:\tcpuid", {"rax", "rcx", "rdx"}),
    ("  10:\trdtsc", {"rax", "rdx"}),
    ("  10:\tsyscall", {"rax", "rcx", "r11"}),
    ("  10:\txchg   %eax,%r9d", {"rax", "r9"}),
    ("  10:\txchg   %ax,%ax", set()),
    ("  10:\tlock cmpxchg %ecx,(%rdi)", {"rax"}),
    ("  10:\tlock xadd %esi,(%rdi)", {"rsi"}),
    ("  10:\trep stos %rax,%es:(%rdi)", {"rcx", "rdi"}),
    ("  10:\trep movsb %ds:(%rsi),%es:(%rdi)", {"rcx", "rsi", "rdi"}),
    ("  10:\trepz cmpsb %es:(%rdi),%ds:(%rsi)", {"rcx", "rsi", "rdi"}),
    ("  10:\tmovsd  %xmm1,%xmm0", {"xmm0"}),
    ("  10:\tmovsd  0x8(%rsp),%xmm2", {"xmm2"}),
    ("  10:\tvaddps %ymm1,%ymm2,%ymm3", {"xmm3"}),
    ("  10:\tvmovdqu32 %zmm0,%zmm17{%k1}{z}", {"xmm17"}),
    ("  10:\tucomisd %xmm1,%xmm0", set()),
    ("  10:\tcmpltps %xmm1,%xmm0", {"xmm0"}),
    ("  10:\tpcmpistri $0x1a,%xmm1,%xmm0", {"rcx"}),
    ("  10:\tvzeroupper", {f"xmm{i}" for i in range(16)}),
    ("  10:\tcs nopw 0x0(%rax,%rax,1)", set()),
    ("  10:\tendbr64", set()),
    ("  10:\tret", set()),
])
def test_instruction_writes(line: str, want: set[str]) -> None:
    insn = parse_line(line)
    assert insn is not None
    assert insn_writes(insn) == want


def test_not_understood_instruction_is_unknown() -> None:
    insn = parse_line("  10:\t(bad)")
    assert insn is not None and insn_writes(insn) is None


# ---- old vs new -------------------------------------------------------------------------------

def test_new_leaf_with_a_loop_is_flagged(bins: dict[str, str]) -> None:
    new = clob(bins["new"], "leaf")
    assert new is not None
    got = risk(bins["pie"], bins["new"], "leaf")
    assert got and got == new - {"rax"}
    assert got <= GPR_SCRATCH and len(got) >= 3


def test_new_leaf_that_logs_is_flagged_everything(bins: dict[str, str]) -> None:
    assert risk(bins["pie"], bins["new"], "leaf", "leaf_logs") == CALLER_SAVED - {"rax"}


def test_identical_old_and_new_is_safe(bins: dict[str, str]) -> None:
    assert risk(bins["pie"], bins["same"], "leaf") == frozenset()
    # a switch in both bodies is read as a jump table, not as a tail call
    assert risk(bins["pie"], bins["new"], "dispatch") == frozenset()


def test_old_that_already_calls_out_is_safe(bins: dict[str, str]) -> None:
    assert risk(bins["pie"], bins["new"], "say", "leaf_logs") == frozenset()


def test_old_switch_does_not_hide_the_hazard(bins: dict[str, str]) -> None:
    # The old side is a lower bound: an indirect jump there counts as nothing, so a new body
    # that writes more than the old one is still flagged.
    old = proven_clobbers(bins["pie"], *sym(bins["pie"], "dispatch"))
    assert old is not None and old != CALLER_SAVED
    got = risk(bins["pie"], bins["new"], "dispatch", "leaf")
    assert {"r8", "r9", "rsi"} <= got


def test_patch_calls_through_slots_are_followed_into_the_target(
        bins: dict[str, str], tmp_path: Path) -> None:
    """Patch code calls target functions through `__opus_ref_` pointer slots; the set of the
    target function is used instead of 'everything'."""
    src = tmp_path / "slot.c"
    src.write_text(
        "int leaf(int);\n"
        "static __typeof__(leaf) *__opus_ref_leaf;\n"
        "void *__opus_keep[] = { &__opus_ref_leaf };\n"
        "__attribute__((noinline)) int twice(int x) { return (*__opus_ref_leaf)(x) + 2; }\n")
    so = gcc(tmp_path / "slot.so", "-O2", "-fPIC", "-shared", str(src))
    assert "__opus_ref_leaf" in disasm(so, "twice")
    assert clob(so, "twice") == CALLER_SAVED  # on its own: an indirect call
    assert risk(bins["pie"], so, "leaf", "twice") == frozenset()  # leaf -> leaf: rax only
    assert risk(bins["pie"], so, "via_static", "twice") == frozenset()


# ---- the hazard is real -----------------------------------------------------------------------

def _kept_across_call(text: str) -> set[str]:
    """Caller-saved registers read after `call leaf` before being written: the values a
    -fipa-ra caller keeps in them across the call."""
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if re.search(r"call\s+\w+ <leaf>", ln))
    kept: set[str] = set()
    written: set[str] = {"rax"}  # the return value
    for ln in lines[at + 1:]:
        insn = parse_line(ln)
        if insn is None or insn.mnemonic == "ret":
            break
        for op in insn.operands:
            for r in re.findall(r"%(\w+)", op):
                full = REGS.get(r)
                if full in CALLER_SAVED and full not in written:
                    kept.add(full)
        written |= insn_writes(insn) or set()
    return kept


def test_ipa_ra_hazard_is_real(bins: dict[str, str]) -> None:
    demo, safe = bins["demo"], bins["demo_safe"]
    text = disasm(demo, "caller")
    # gcc -O2 -fipa-ra: caller saves nothing and uses its argument registers after the call
    assert "push" not in text
    kept = _kept_across_call(text)
    assert {"rcx", "rdx", "rsi", "rdi"} <= kept, text
    # with -fno-ipa-ra the same caller moves them to callee-saved registers
    assert "push" in disasm(safe, "caller")
    assert not _kept_across_call(disasm(safe, "caller"))

    # leaf_v2 writes some of them; the checker names exactly those
    got = risk(demo, demo, "leaf", "leaf_v2")
    assert got & kept, (got, kept)
    assert got == clob(demo, "leaf_v2") - {"rax"}

    # and the program does compute a wrong result once leaf jumps to leaf_v2
    out = subprocess.run([demo], capture_output=True, text=True, check=True, timeout=10)
    before, after = out.stdout.split()
    assert before == "100" and after != "100"
    out = subprocess.run([safe], capture_output=True, text=True, check=True, timeout=10)
    assert out.stdout.split() == ["100", "100"]
    assert built_without_ipa_ra(safe) and not built_without_ipa_ra(demo)


def test_ipa_ra_keeps_xmm_registers_too(bins: dict[str, str]) -> None:
    kept = _kept_across_call(disasm(bins["pie"], "scale"))
    assert {"xmm0", "xmm1"} <= kept
    got = risk(bins["pie"], bins["new"], "leaf", "leaf_fp")
    assert "xmm0" in got and got <= {f"xmm{i}" for i in range(16)}


def test_vzeroupper_clobbers_xmm_as_gcc_assumes(tmp_path: Path) -> None:
    """gcc's ipa-ra counts vzeroupper as writing the xmm registers: a caller spills doubles it
    could otherwise keep in xmm1/xmm2 across a call to an AVX leaf that only names ymm0."""
    src = tmp_path / "avx.c"
    src.write_text(
        "typedef float v8 __attribute__((vector_size(32)));\n"
        "__attribute__((noinline)) static int vz(v8 *p, int n)\n"
        "{ v8 s = {0}; for (int i = 0; i < n; i++) s += p[i]; return (int)s[0]; }\n"
        "double c3(double a, double b, double c, v8 *p, int n)\n"
        "{ int x = vz(p, n); return a * x + b * c; }\n")
    so = gcc(tmp_path / "avx.so", "-O2", "-mavx2", "-fPIC", "-shared", str(src))
    assert "vzeroupper" in disasm(so, "vz")
    assert re.search(r"vmovsd\s+%xmm1,", disasm(so, "c3"))  # spilled before the call
    assert {f"xmm{i}" for i in range(16)} <= (clob(so, "vz") or set())


# ---- built_without_ipa_ra ---------------------------------------------------------------------

def test_built_without_ipa_ra(bins: dict[str, str]) -> None:
    assert built_without_ipa_ra(bins["noipara"])
    assert not built_without_ipa_ra(bins["pie"])
    assert built_without_ipa_ra(bins["o1"])  # gcc 12 enables -fipa-ra at -O2/-O3/-Os only
    assert not built_without_ipa_ra(bins["nodebug"])  # no DWARF: cannot tell


@pytest.mark.parametrize(("producer", "want"), [
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -g -O2", True),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -g -O2 -fno-ipa-ra", False),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -g -O2 -fno-ipa-ra -fipa-ra", True),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -g", False),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -O3 -O0", False),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -Os", True),
    ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -O1 -fipa-ra", True),
    ("GNU GIMPLE 12.2.0 -mtune=generic -march=x86-64 -O2 -flto", True),
    ("GNU AS 2.40", False),
    ("GNU C17 12.2.0", None),  # -gno-record-gcc-switches
    ("clang version 16.0.6", None),
])
def test_producer_uses_ipa_ra(producer: str, want: bool | None) -> None:
    assert producer_uses_ipa_ra(producer) is want
