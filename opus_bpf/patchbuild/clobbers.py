"""Caller-saved registers a function may write, to catch the gcc ``-fipa-ra`` hazard.

With ``-fipa-ra`` (gcc: on at -O2/-O3/-Os) a caller of a non-interposable function keeps values
in caller-saved registers across the call when the callee (and everything it calls) leaves them
alone. A patch whose new body writes a caller-saved register the old body never wrote corrupts
such a caller. We disassemble both bodies with binutils ``objdump`` (AT&T syntax) and compare.

The two sides are bounded in opposite directions: the new function's set is an *upper* bound
(anything not understood counts as every caller-saved register), the old function's set a
*lower* bound (only writes we can prove), so that neither side hides a hazard.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import subprocess
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .elfinfo import DEBUG_ROOT

GPRS = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")
XMMS = tuple(f"xmm{i}" for i in range(32))  # 16-31 exist with AVX-512; all caller-saved
MASKS = tuple(f"k{i}" for i in range(8))
CALLER_SAVED: frozenset[str] = frozenset(GPRS + XMMS + MASKS)
VZERO_XMM: frozenset[str] = frozenset(XMMS[:16])  # vzeroupper/vzeroall touch ymm0-15 only
_NONE: frozenset[str] = frozenset()


def _register_names() -> dict[str, str]:
    """Every AT&T register spelling -> its 64-bit (or xmm) name; callee-saved ones included so
    they are recognised as registers and then dropped."""
    names: dict[str, str] = {}
    for x in "abcd":
        full = f"r{x}x"
        for n in (full, f"e{x}x", f"{x}x", f"{x}l", f"{x}h"):
            names[n] = full
    for r in ("si", "di", "bp", "sp"):
        for n in (f"r{r}", f"e{r}", r, f"{r}l"):
            names[n] = f"r{r}"
    for i in range(8, 16):
        for s in ("", "d", "w", "b", "l"):
            names[f"r{i}{s}"] = f"r{i}"
    for i in range(32):
        for p in ("x", "y", "z"):
            names[f"{p}mm{i}"] = f"xmm{i}"
    for i in range(8):
        names[f"k{i}"] = f"k{i}"
    return names


REGS = _register_names()

_PREFIXES = {"lock", "rep", "repz", "repe", "repnz", "repne", "notrack", "bnd", "data16",
             "data32", "addr32", "cs", "ds", "es", "ss", "fs", "gs", "xacquire", "xrelease",
             "rex"}
# read-only although their last operand may be a register
_READ_ONLY = re.compile(
    r"^(cmp[bwlq]?|test[bwlq]?|bt[wlq]?|v?u?comis[sdh]|v?ptest|vtestp[sd]|kortest[bwdq]|"
    r"ktest[bwdq]|push[wlq]?|pushf[wlq]?|ret[wlq]?|lret[wlq]?|nop[wlq]?|endbr(32|64)|hlt|"
    r"pause|[lms]fence|int3|ud[012]|prefetch\w*|clflush\w*|clwb|cl[cdi]|st[cdi]|cmc|sahf|f?wait|"
    r"emms|[ls]dmxcsr|v[ls]dmxcsr|stmxcsr|vstmxcsr|fx?save\w*|xsave\w*|wr[fg]sbase|wrpkru|"
    r"wrmsr|out[bwl]?|monitor\w*|mwait\w*|serialize|leave[wlq]?|enter[wlq]?|popf[wlq]?|"
    r"v?maskmovdqu|maskmovq|bndc[lun]|incssp[dq]|setssbsy)$")
# implicit register writes, on top of the explicit destination operand
_IMPLICIT: dict[str, tuple[str, ...]] = {
    "cpuid": ("rax", "rcx", "rdx"), "rdtsc": ("rax", "rdx"), "rdtscp": ("rax", "rcx", "rdx"),
    "rdpmc": ("rax", "rdx"), "rdmsr": ("rax", "rdx"), "xgetbv": ("rax", "rdx"),
    "rdpkru": ("rax", "rdx"), "syscall": ("rax", "rcx", "r11"),
    "cbtw": ("rax",), "cwtl": ("rax",), "cltq": ("rax",), "cbw": ("rax",), "cwde": ("rax",),
    "cdqe": ("rax",), "cwtd": ("rdx",), "cltd": ("rdx",), "cqto": ("rdx",), "cwd": ("rdx",),
    "cdq": ("rdx",), "cqo": ("rdx",), "lahf": ("rax",), "xlat": ("rax",), "xlatb": ("rax",),
    "loop": ("rcx",), "loope": ("rcx",), "loopne": ("rcx",), "loopz": ("rcx",),
    "loopnz": ("rcx",), "cmpxchg8b": ("rax", "rdx"), "cmpxchg16b": ("rax", "rdx"),
    "pcmpestri": ("rcx",), "pcmpistri": ("rcx",), "vpcmpestri": ("rcx",),
    "vpcmpistri": ("rcx",), "pcmpestrm": ("xmm0",), "pcmpistrm": ("xmm0",),
    "vpcmpestrm": ("xmm0",), "vpcmpistrm": ("xmm0",), "int": ("rax",),
}
# we cannot bound what these write (context restores, transactions, key locker, VM exits)
_OPAQUE = re.compile(r"^(\(bad\)|\.byte|\.word|xrstor\w*|fxrstor\w*|frstor\w*|xbegin|vmcall|"
                     r"vmmcall|sysenter|sysexit|sysret\w*|iret\w*|encodekey\w*|loadiwkey|"
                     r"tdcall|seamcall|getsec|enclu|enclv|ins[bwl]?|outs[bwl]?|lcall\w*|ljmp\w*|"
                     r"xcrypt\S*|xstore\S*|xsha\S*|montmul)$")
_STRING = re.compile(r"^(movs|stos|lods|cmps|scas)[bwlq]?$")
_STRING_WRITES = {"movs": ("rsi", "rdi"), "stos": ("rdi",), "lods": ("rax", "rsi"),
                  "cmps": ("rsi", "rdi"), "scas": ("rdi",)}
_BYTE_REGS = {f"%{r}" for r in ("al", "bl", "cl", "dl", "ah", "bh", "ch", "dh", "sil", "dil",
                                 "bpl", "spl", *(f"r{i}b" for i in range(8, 16)))}
_MULDIV = re.compile(r"^(mul|div|idiv|imul)[bwlq]?$")
_LINE = re.compile(r"^\s*([0-9a-f]+):\s*(.*)$")
_DIRECT = re.compile(r"^([0-9a-f]+)(?:\s+<([^>]*)>)?$")
_COMMENT_SYM = re.compile(r"#\s*[0-9a-f]+\s+<([^>+]+)(?:\+0x[0-9a-f]+)?>")
SLOT_PREFIX = "__opus_ref_"  # generate.SLOT_PREFIX; pointer slots through which patch code calls


@dataclass(frozen=True)
class Insn:
    addr: int
    mnemonic: str
    operands: tuple[str, ...]
    prefixes: tuple[str, ...]
    comment: str


@dataclass(frozen=True)
class _Func:
    name: str
    start: int
    end: int


class _Elf:
    """Function symbols and PLT ranges of one ELF (plus its separate debug file's symbols)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.funcs: list[_Func] = []
        self.by_name: dict[str, list[_Func]] = {}
        self.plt: list[tuple[int, int]] = []
        self.data: list[tuple[int, int, int]] = []  # (addr, end, file offset): jump tables
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for sec in elf.iter_sections():
                name, addr, size = sec.name, sec.header.sh_addr, sec.header.sh_size
                if name.startswith(".plt"):
                    self.plt.append((addr, addr + size))
                elif name in (".rodata", ".data.rel.ro") and sec.header.sh_type != "SHT_NOBITS":
                    self.data.append((addr, addr + size, sec.header.sh_offset))
            self._add_symbols(elf)
            debug = _debug_file(elf, path)
        if debug is not None:
            with open(debug, "rb") as f:
                self._add_symbols(ELFFile(f))
        uniq = {(s.start, s.end, s.name): s for s in self.funcs}
        self.funcs = sorted(uniq.values(), key=lambda s: (s.start, -s.end))
        self.starts = [s.start for s in self.funcs]
        for s in self.funcs:
            self.by_name.setdefault(s.name, []).append(s)

    def _add_symbols(self, elf: ELFFile) -> None:
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                e = sym.entry
                if (e.st_info.type in ("STT_FUNC", "STT_GNU_IFUNC") and e.st_size > 0
                        and e.st_shndx != "SHN_UNDEF"):
                    self.funcs.append(_Func(sym.name, e.st_value, e.st_value + e.st_size))

    def in_plt(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.plt)

    def containing(self, addr: int) -> _Func | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        while i >= 0:
            s = self.funcs[i]
            if s.start <= addr < s.end:
                return s
            if s.start < addr - (1 << 20):
                break
            i -= 1
        return None

    def read(self, addr: int, size: int) -> bytes | None:
        for lo, hi, off in self.data:
            if lo <= addr and addr + size <= hi:
                with open(self.path, "rb") as f:
                    f.seek(off + addr - lo)
                    return f.read(size)
        return None


def _debug_file(elf: ELFFile, path: str) -> str | None:
    """The separate debug file of a stripped ELF (/usr/lib/debug/.build-id/xx/yyy.debug)."""
    if elf.get_section_by_name(".debug_info") is not None:
        return None
    for sec in elf.iter_sections():
        if sec.header.sh_type == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    bid = str(note["n_desc"])
                    cand = DEBUG_ROOT / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
                    if cand.is_file() and os.path.realpath(cand) != os.path.realpath(path):
                        return str(cand)
    return None


@functools.lru_cache(maxsize=32)
def _elf_cached(path: str, mtime_ns: int, size: int) -> _Elf:
    return _Elf(path)


def _elf(path: str) -> _Elf:
    st = os.stat(path)
    return _elf_cached(os.path.realpath(path), st.st_mtime_ns, st.st_size)


def _split_operands(text: str) -> tuple[str, ...]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return tuple(out)


def _is_prefix(token: str) -> bool:
    t = token.lower()
    return t in _PREFIXES or t.startswith(("rex.", "{"))  # {vex}/{evex} pseudo-prefixes


def parse_line(line: str) -> Insn | None:
    """One objdump -d line -> Insn (None for headers, blank lines and `...`)."""
    m = _LINE.match(line)
    if not m:
        return None
    body, _, comment = m.group(2).partition("#")
    tokens = body.split()
    if not tokens:
        return None
    prefixes = []
    while len(tokens) > 1 and _is_prefix(tokens[0]):
        prefixes.append(tokens.pop(0).lower())
    if tokens and _is_prefix(tokens[0]):  # a lone prefix byte
        prefixes.append(tokens.pop(0).lower())
        return Insn(int(m.group(1), 16), "nop", (), tuple(prefixes), comment.strip())
    mnemonic = tokens[0].lower()
    ops = _split_operands(" ".join(tokens[1:]))
    return Insn(int(m.group(1), 16), mnemonic, ops, tuple(prefixes), comment.strip())


def reg_of(operand: str) -> str | None:
    """`%r8d` / `%ymm3{%k1}{z}` -> 64-bit (or xmm) name; None for memory/immediates/other regs."""
    op = operand.split("{", 1)[0].strip()
    if not op.startswith("%"):
        return None
    return REGS.get(op[1:].lower())


def _mask_regs(operands: tuple[str, ...]) -> set[str]:
    return {REGS[m] for op in operands for m in re.findall(r"\{%(k[0-7])\}", op)}


def insn_writes(insn: Insn) -> frozenset[str] | None:
    """Caller-saved registers one non-branch instruction writes. None = not understood (the
    caller decides: every register for an upper bound, nothing for a lower bound)."""
    mn, ops = insn.mnemonic, insn.operands
    regs = [reg_of(o) for o in ops]
    out: set[str] = set()
    if _OPAQUE.match(mn):
        return None
    if mn.startswith("nop") or (mn == "xchg" and ops == ("%ax", "%ax")):  # 66 90 padding
        return _NONE
    if _READ_ONLY.match(mn):
        return _NONE
    if mn in ("vzeroupper", "vzeroall"):
        return VZERO_XMM
    sm = _STRING.match(mn)
    if sm and all(("%es:" in o or "%ds:" in o or "(%r" in o or o.startswith("%")) for o in ops) \
            and not any((r or "").startswith("xmm") for r in regs):
        out.update(_STRING_WRITES[sm.group(1)])
        if any(p.startswith("rep") for p in insn.prefixes):
            out.add("rcx")
        if sm.group(1) == "lods":
            out.add("rax")
        return frozenset(out & CALLER_SAVED)
    if mn in _IMPLICIT:
        out.update(_IMPLICIT[mn])
        if mn.endswith(("stri", "strm")):
            return frozenset(out)  # string compares only read their explicit operands
    if _MULDIV.match(mn) and len(ops) == 1:
        # one-operand mul/div: result in rdx:rax (only ax for the byte forms)
        byte = mn.endswith("b") or ops[0].lower() in _BYTE_REGS
        out.update(("rax",) if byte else ("rax", "rdx"))
        return frozenset(out)
    if mn in ("xchg", "xadd") or mn.startswith(("xchg", "xadd")):
        out.update(r for r in regs if r)
    elif mn.startswith("cmpxchg"):
        out.add("rax")
        if regs and regs[-1]:
            out.add(regs[-1])
    elif mn.startswith("mulx") or mn.startswith(("vgather", "vpgather")):
        # mulx writes its last two operands; AVX2 gathers also write (clear) the mask operand
        out.update(r for r in regs[-2:] if r)
        if mn.startswith(("vgather", "vpgather")):
            out.update(r for r in regs if r)
            out |= _mask_regs(ops)
    elif mn.startswith(("vscatter", "vpscatter")):
        out |= _mask_regs(ops)
    elif regs and regs[-1]:
        out.add(regs[-1])  # AT&T: the destination is the last operand
    return frozenset(out & CALLER_SAVED)


def disassemble(elf_path: str, start: int, end: int) -> list[Insn] | None:
    """objdump's view of [start, end) of elf_path; None if it fails or yields nothing."""
    try:
        res = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", "-M", "att", "-w",
             f"--start-address={start:#x}", f"--stop-address={end:#x}", elf_path],
            capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    insns = []
    in_body = False
    for line in res.stdout.splitlines():
        if line.startswith("Disassembly of section"):
            in_body = True
            continue
        if in_body:
            insn = parse_line(line)
            if insn is not None and start <= insn.addr < end:
                insns.append(insn)
    return insns or None


class _Walker:
    """Union of the writes of a function and the functions it reaches by direct call/jmp."""

    def __init__(self, upper: bool, target_elf: str | None = None) -> None:
        self.upper = upper
        self.target_elf = target_elf  # where __opus_ref_ slots point (patch objects only)
        self.seen: set[tuple[str, int, int]] = set()

    def unknown(self) -> frozenset[str]:
        return CALLER_SAVED if self.upper else _NONE

    def function(self, path: str, start: int, end: int, depth: int) -> frozenset[str] | None:
        key = (os.path.realpath(path), start, end)
        if key in self.seen:
            return _NONE  # already counted (or being counted): a cycle adds nothing new
        self.seen.add(key)
        insns = disassemble(path, start, end)
        if insns is None:
            return None
        elf = _elf(path)
        name = getattr(elf.containing(start), "name", "")
        out: set[str] = set()
        for i, insn in enumerate(insns):
            mn = insn.mnemonic
            if mn.startswith("call") or mn.startswith("j") or mn.startswith("loop"):
                if mn.startswith("loop"):
                    out.add("rcx")
                out |= self.branch(path, elf, insns, i, start, end, name, depth)
                continue
            w = insn_writes(insn)
            out |= self.unknown() if w is None else w
            if self.upper and out >= CALLER_SAVED:
                break
        return frozenset(out & CALLER_SAVED)

    def callee(self, path: str, elf: _Elf, addr: int, depth: int) -> frozenset[str]:
        """Writes of whatever a direct call/jmp to addr (outside the current function) runs."""
        if elf.in_plt(addr):
            return CALLER_SAVED  # external: gcc assumes, and we must assume, everything
        fn = elf.containing(addr)
        if fn is None or depth <= 0:
            return self.unknown()
        got = self.function(path, fn.start, fn.end, depth - 1)
        return self.unknown() if got is None else got

    def branch(self, path: str, elf: _Elf, insns: list[Insn], i: int, start: int, end: int,
               name: str, depth: int) -> frozenset[str]:
        insn = insns[i]
        is_call = insn.mnemonic.startswith("call")
        op = insn.operands[0] if insn.operands else ""
        if op.startswith("*"):
            if is_call:
                return self.slot_call(insn, depth)
            if self.upper and _is_switch_jump(elf, insns, i, start, end, name):
                return _NONE  # a jump table into this function: its code is already scanned
            # a tail call through a pointer (full set) or a switch we could not read; the
            # lower bound cannot claim either
            return self.unknown()
        m = _DIRECT.match(op)
        if not m:
            return self.unknown()
        target = int(m.group(1), 16)
        if start <= target < end:
            return _NONE  # local branch (or call to the next instruction, for the PC)
        if m.group(2) and "@plt" in m.group(2):
            return CALLER_SAVED
        return self.callee(path, elf, target, depth)

    def slot_call(self, insn: Insn, depth: int) -> frozenset[str]:
        """`call *__opus_ref_foo(%rip)` in a patch object calls the target's foo: use its set."""
        m = _COMMENT_SYM.search("# " + insn.comment) if insn.comment else None
        if not (self.upper and self.target_elf and m and m.group(1).startswith(SLOT_PREFIX)
                and "(%rip)" in insn.operands[0]):
            return CALLER_SAVED
        name = m.group(1)[len(SLOT_PREFIX):]
        tel = _elf(self.target_elf)
        cands = tel.by_name.get(name) or tel.by_name.get(re.sub(r"__\d+$", "", name)) or []
        if not cands or depth <= 0:
            return CALLER_SAVED
        out: set[str] = set()
        for fn in cands:  # several statics of that name: any of them
            got = self.function(self.target_elf, fn.start, fn.end, depth - 1)
            if got is None:
                return CALLER_SAVED
            out |= got
        return frozenset(out)


def _is_switch_jump(elf: _Elf, insns: list[Insn], i: int, start: int, end: int,
                    name: str) -> bool:
    """gcc's jump-table dispatch (`jmp *%reg` after `movslq (%base,%idx,4)` PIE form, or
    `jmp *TABLE(,%idx,8)`), recognised by reading the table's first entry and finding that it
    points into this function (or its .cold part), unlike a table of function pointers."""
    op = insns[i].operands[0][1:]

    def ours(addr: int) -> bool:
        if start <= addr < end:
            return True
        fn = elf.containing(addr)
        return fn is not None and bool(name) and fn.name.startswith(name + ".")

    m = re.match(r"^(0x[0-9a-f]+)\(,%\w+,8\)$", op)
    if m:  # non-PIE: absolute 8-byte entries
        raw = elf.read(int(m.group(1), 16), 8)
        return raw is not None and ours(int.from_bytes(raw, "little"))
    if reg_of(op) is None:
        return False
    # PIE: lea TABLE(%rip),%b; movslq (%b,%i,4),%t; add %b,%t; jmp *%t -- table found by lea
    for prev in reversed(insns[max(0, i - 8): i]):
        if prev.mnemonic == "lea" and prev.operands and "(%rip)" in prev.operands[0]:
            cm = re.match(r"^([0-9a-f]+)\b", prev.comment)
            if not cm:
                return False
            table = int(cm.group(1), 16)
            raw = elf.read(table, 4)
            if raw is None:
                return False
            return ours(table + int.from_bytes(raw, "little", signed=True))
    return False


def clobbered_registers(elf_path: str, address: int, size: int, *, depth: int = 4
                        ) -> frozenset[str] | None:
    """Caller-saved registers a function (link-time address+size in elf_path) may write,
    including through direct calls to functions of the same file (followed up to `depth`); a
    call through the PLT, an indirect call, an indirect jmp that is not a jump table into this
    function, or anything not understood -> the full caller-saved set (CALLER_SAVED: rax, rcx,
    rdx, rsi, rdi, r8-r11, xmm0-31, k0-7). None if the function cannot be disassembled."""
    return _Walker(upper=True).function(elf_path, address, address + size, depth)


def proven_clobbers(elf_path: str, address: int, size: int, *, depth: int = 4
                    ) -> frozenset[str] | None:
    """Lower bound, for the old function: registers it provably writes, so gcc's view of it
    (what its callers rely on) includes at least these. Calls through the PLT or a pointer
    count as everything, as they do for gcc; what we do not understand counts as nothing."""
    return _Walker(upper=False).function(elf_path, address, address + size, depth)


def ipa_ra_risk(target_elf: str, old_addr: int, old_size: int, patch_so: str, new_addr: int,
                new_size: int) -> frozenset[str]:
    """Caller-saved registers the new function may clobber that the old one never did (empty =
    safe). Empty is also safe for callers of functions that call the old one: gcc's view of
    such a function includes the old function's set. Calls from the patch through `__opus_ref_`
    slots are followed into target_elf. An old function we cannot disassemble counts as
    writing nothing, a new one as writing everything."""
    old = proven_clobbers(target_elf, old_addr, old_size)
    walker = _Walker(upper=True, target_elf=target_elf)
    new = walker.function(patch_so, new_addr, new_addr + new_size, 4)
    if new is None:
        new = CALLER_SAVED
    return frozenset(new - (old or _NONE))


# ---- -fipa-ra from DW_AT_producer -------------------------------------------------------------

_IPA_RA_LEVELS = {"2", "3", "s", "fast", "z"}  # gcc -Q --help=optimizers: not -O1, -Og, -O0


def producer_uses_ipa_ra(producer: str) -> bool | None:
    """gcc's recorded switches -> whether -fipa-ra was in effect; None when unknown (no
    switches recorded, or not gcc). The last -O and the last -f[no-]ipa-ra win, as in gcc."""
    if producer.startswith("GNU AS"):
        return False  # assembler: no register allocation at all
    if not producer.startswith(("GNU C", "GNU GIMPLE")):
        return None
    switches = [w for w in producer.split() if w.startswith("-")]
    if not switches:
        return None  # -gno-record-gcc-switches: we cannot tell
    level = "0"
    explicit: bool | None = None
    for w in switches:
        if w.startswith("-O"):
            level = w[2:] or "1"
        elif w == "-fipa-ra":
            explicit = True
        elif w == "-fno-ipa-ra":
            explicit = False
    if level == "0":
        return False  # nothing stays in a register across a call at -O0
    if level.isdigit() and int(level) > 3:
        level = "3"
    return (level in _IPA_RA_LEVELS) if explicit is None else explicit


def built_without_ipa_ra(target_elf: str) -> bool:
    """True when every DWARF compile unit's DW_AT_producer shows -fipa-ra was off (-fno-ipa-ra,
    or -O0/-O1/-Og, where gcc 12 does not enable it); then callers cannot depend on a callee's
    register use. False when any unit used it, or when we cannot tell (no DWARF, no switches,
    another compiler)."""
    try:
        with open(target_elf, "rb") as f:
            elf = ELFFile(f)
            debug = _debug_file(elf, target_elf)
            if debug is None:
                return _units_without_ipa_ra(elf)
        with open(debug, "rb") as f:
            return _units_without_ipa_ra(ELFFile(f))
    except (OSError, ELFError):
        return False


def _units_without_ipa_ra(elf: ELFFile) -> bool:
    if not elf.has_dwarf_info():
        return False
    seen = False
    for cu in elf.get_dwarf_info().iter_CUs():
        top: DIE = cu.get_top_DIE()
        attr = top.attributes.get("DW_AT_producer")
        if attr is None:
            return False
        value = attr.value.decode(errors="replace") if isinstance(attr.value, bytes) \
            else str(attr.value)
        if producer_uses_ipa_ra(value) is not False:
            return False
        seen = True
    return seen


__all__ = ["CALLER_SAVED", "built_without_ipa_ra", "clobbered_registers", "ipa_ra_risk",
           "proven_clobbers", "producer_uses_ipa_ra"]
