"""Apply and revert a bundle on a live process: the whole pipeline, failure paths beside each step.

    verify bundle + build-id -> resolve old functions -> load + bind the patch object (process
    running) -> probes count activations -> stop the world at a quiescent moment -> write the
    patch record and the entry jumps -> resume -> remove probes

Every failure before the jumps are written leaves the process as it was (the patch object is
unmapped again); the jumps of one patch are written within one pause.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import asdict, dataclass, field

from opus_bpf import bundle as bundle_mod
from opus_bpf.errors import (
    AlreadyApplied,
    BundleError,
    NoSuchProcess,
    NotApplied,
    OpusError,
    ProcessExited,
    SymbolProblem,
    TargetMismatch,
)
from opus_bpf.runtime import gate as G
from opus_bpf.runtime import loader as L
from opus_bpf.runtime import perthread as PT
from opus_bpf.runtime import traphandler as TH
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.probes import ActivationProbes, ProbeSite
from opus_bpf.runtime.quiescence import CodeRange, WaitStats, wait_for_quiescence
from opus_bpf.runtime.redirect import decode_jump, encode_jump
from opus_bpf.runtime.remote import RemoteCaller
from opus_bpf.runtime.status import PatchState, loaded_patches
from opus_bpf.runtime.store import store_object
from opus_bpf.runtime.threads import process_gone
from opus_bpf.target.elf import ElfImage, load_elf
from opus_bpf.target.process import (
    Mapping,
    check_pid,
    check_privileges,
    load_bias,
    mapped_objects,
    read_maps,
)


@dataclass
class Redirect:
    name: str
    old_address: int
    new_address: int
    jump: str  # "rel32" or "abs64"


@dataclass
class ApplyResult:
    """What one apply or revert did, with the figures an operator and the metrics want."""

    operation: str
    pid: int
    bundle_id: str
    name: str
    functions: list[Redirect] = field(default_factory=list)
    wait_seconds: float = 0.0
    pause_seconds: float = 0.0
    pauses: list[float] = field(default_factory=list)
    attempts: int = 0
    probe_hits: int = 0
    load_seconds: float = 0.0
    probe_setup_seconds: float = 0.0
    probe_detach_seconds: float = 0.0
    total_seconds: float = 0.0
    outcome: str = "applied"
    mode: str = "consistent"
    # per-thread mode: each thread held alone; the whole process is never stopped on purpose
    hold_max_seconds: float = 0.0
    holds: list[float] = field(default_factory=list)
    remote_holds: list[float] = field(default_factory=list)  # holds for remote system calls
    redirect_seconds: float = 0.0  # until every new call reaches the new code
    retire_seconds: float = 0.0  # until no thread holds an old activation
    busy_threads: int = 0

    def take_per_thread(self, st: PT.PerThreadStats, t_start: float) -> ApplyResult:
        """Copy a per-thread activation's figures: its pause is the time every thread was held
        at once (only a single-threaded process has one), its wait the switch and the retire."""
        self.mode = "per-thread"
        load_holds = list(self.remote_holds)  # the load's remote calls, if this run loaded
        self.holds = load_holds + st.holds
        self.remote_holds = load_holds + st.remote_holds
        self.hold_max_seconds = max(self.holds, default=0.0)
        self.pause_seconds = st.world_pause_seconds
        self.pauses = [st.world_pause_seconds]
        self.redirect_seconds = st.redirect_seconds
        self.retire_seconds = st.retire_seconds
        self.wait_seconds = st.switch_seconds + st.retire_seconds
        self.attempts = st.looks
        self.busy_threads = st.busy_threads
        self.probe_setup_seconds = st.probe_setup_seconds
        self.probe_detach_seconds = st.probe_detach_seconds
        self.total_seconds = time.monotonic() - t_start
        return self

    def take(self, stats: WaitStats, t_start: float, succeeded: bool = True) -> ApplyResult:
        """Copy the quiescence wait's figures; the last pause is the successful one."""
        self.wait_seconds = stats.wait_seconds
        self.pauses = stats.pauses
        self.pause_seconds = stats.pauses[-1] if stats.pauses and succeeded else 0.0
        self.attempts = stats.attempts
        self.probe_hits = stats.probe_hits
        self.total_seconds = time.monotonic() - t_start
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        for f in d["functions"]:
            f["old_address"] = hex(f["old_address"])
            f["new_address"] = hex(f["new_address"])
        return d


@dataclass
class _Target:
    image: ElfImage
    path: str
    bias: int
    maps: list[Mapping]


def _read_bundle(path: str) -> bundle_mod.Bundle:
    try:
        return bundle_mod.read_bundle(path)
    except bundle_mod.BundleError as exc:
        raise BundleError(exc.message) from exc


def _find_target(pid: int, build_id: str, target_path: str) -> _Target:
    """The object in the process (executable or library) whose build-id is the bundle's."""
    maps = read_maps(pid)
    objs = mapped_objects(pid, maps)
    exe = os.readlink(f"/proc/{pid}/exe")
    seen = []
    for path in sorted(
        objs, key=lambda p: (p != exe, os.path.basename(p) != os.path.basename(target_path))
    ):
        try:
            img = load_elf(
                f"/proc/{pid}/root{path}" if os.path.exists(f"/proc/{pid}/root{path}") else path,
                need_symtab=False,
            )
        except Exception:  # noqa: BLE001 - not an ELF file
            continue
        if img.build_id == build_id:
            full = load_elf(img.path)  # with symbols, from a debug file if stripped
            return _Target(full, path, load_bias(full, objs[path]), maps)
        if path == exe:
            seen.append(f"{exe} has build-id {img.build_id}")
    raise TargetMismatch(
        f"process {pid} does not map the binary this patch was built for (build-id {build_id}, "
        f"{target_path}); {'; '.join(seen) or 'no mapped object matches'}: rebuild the patch for it"
    )


def target_pids(bundle_or_id: str, exe: str | None = None, lib: str | None = None) -> list[int]:
    """Every process that maps the bundle's target file (by build-id), for --exe / --lib."""
    from opus_bpf.target.discover import pids_mapping

    if not os.path.exists(bundle_or_id):
        raise BundleError(f"{bundle_or_id}: --exe/--lib need the bundle file, not an id")
    m = _read_bundle(bundle_or_id).manifest
    pids = pids_mapping(m.target.build_id, exe or lib, exe_only=exe is not None)
    if not pids:
        raise NoSuchProcess(
            f"no running process maps {exe or lib} with build-id {m.target.build_id}; "
            "check the path and that the processes run the binary the patch was built for"
        )
    return pids


def _active(patches: list[PatchState]) -> dict[int, tuple[PatchState, dict]]:
    """new-function address -> (patch, its record entry), for patches currently active."""
    out = {}
    for p in patches:
        if p.state == "active":
            for f in p.record["functions"]:
                out[f["new"]] = (p, f)
    return out


def _exit_aware(fn):  # type: ignore[no-untyped-def]
    """Any failure after the target died is reported as that, in one line."""

    @functools.wraps(fn)
    def wrapper(bundle: str, pid: int, *args, **kwargs):  # type: ignore[no-untyped-def]
        existed = pid > 0 and os.path.exists(f"/proc/{pid}")
        try:
            return fn(bundle, pid, *args, **kwargs)
        except (ProcessExited, NoSuchProcess):
            raise
        except OpusError:
            if existed and process_gone(pid):
                raise ProcessExited(f"process {pid} exited during the operation") from None
            raise
        except Exception as exc:
            if existed and process_gone(pid):
                raise ProcessExited(f"process {pid} exited during the operation") from exc
            raise

    return wrapper


MODES = ("auto", "per-thread", "consistent")


def choose_mode(mode: str, verdict: str | None, stacked: bool) -> str:
    """per-thread when the analysis found every function safe (old and new activations may
    coexist), consistent (one stop of the whole process) otherwise or when asked."""
    if mode not in MODES:
        raise OpusError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "per-thread" and stacked:
        raise OpusError(
            "--mode per-thread cannot stack on another patch's jump yet; use --mode consistent"
        )
    if mode == "auto":
        return "per-thread" if verdict == "safe" and not stacked else "consistent"
    return mode


@_exit_aware
def apply_bundle(
    bundle_path: str, pid: int, timeout: float = 10.0, mode: str = "auto"
) -> ApplyResult:
    """Apply a bundle to a running process; raise OpusError with the process untouched."""
    t_start = time.monotonic()
    check_privileges()
    check_pid(pid)
    b = _read_bundle(bundle_path)
    m = b.manifest
    tgt = _find_target(pid, m.target.build_id, m.target.path)
    so_path = store_object(b.so_bytes)
    po = L.read_patch_object(so_path)
    result = ApplyResult("apply", pid, m.id, m.name)

    with ProcessMemory(pid) as mem:
        patches = loaded_patches(pid, mem)
        if any(p.id == m.id and p.state == "active" for p in patches):
            raise AlreadyApplied(f"patch {m.name} ({m.id}) is already applied to process {pid}")
        if any(p.id == m.id and p.state == "switching" for p in patches):
            raise OpusError(
                f"patch {m.name} is half-switched in process {pid} (an earlier opus-bpf was "
                f"stopped; calls run through its trap handler): run `opus-bpf revert {m.name} "
                f"--pid {pid}` first"
            )
        active = _active(patches)

        # 1. what each old function is now, and what the probes and the stack check watch
        plan = []
        ranges: list[CodeRange] = []
        sites: list[ProbeSite] = []
        for f in m.functions:
            sym = tgt.image.function(f.name, f.file, f.static)
            if f.new_symbol not in po.symbols:
                raise BundleError(f"patch object lacks {f.new_symbol}; the bundle is inconsistent")
            old = tgt.bias + sym.value
            if sym.size < 5:
                raise SymbolProblem(
                    f"function {f.name} is {sym.size} bytes long, too short for a 5-byte jump"
                )
            for lo, hi in tgt.image.function_pieces(sym):
                ranges.append(CodeRange(tgt.bias + lo, tgt.bias + hi, f.name))
            cur = mem.read(old, 16)
            orig = tgt.image.read_vaddr(sym.value, 16)
            dest = decode_jump(old, cur)
            if cur == orig:
                saved_src = "original"
                sites.append(ProbeSite(tgt.image.path, sym.value, f.name))
            elif dest is not None and dest in active:
                prev, prev_f = active[dest]
                saved_src = f"patch {prev.id}"
                prev_po = L.read_patch_object(prev.object_path)
                new_sym = next(
                    (n for n, (v, _s) in prev_po.symbols.items() if prev.base + v == dest), None
                )
                lo, hi = prev.base + prev_po.text[0], prev.base + prev_po.text[1]
                ranges.append(CodeRange(lo, hi, f"{f.name} (patch {prev.name})"))
                if new_sym:
                    sites.append(ProbeSite(prev.object_path, prev_po.symbols[new_sym][0], f.name))
            elif cur[0] == 0xCC:
                raise OpusError(
                    f"the entry of {f.name} holds a breakpoint (a debugger or another tracing tool "
                    "probes it); remove it and retry"
                )
            else:
                raise OpusError(
                    f"the entry of {f.name} in process {pid} differs from {tgt.path} and from any "
                    "opus-bpf patch: something else modified it; refusing to patch"
                )
            plan.append((f, sym, old, cur, saved_src))

        verdict = (m.analysis or {}).get("verdict") if isinstance(m.analysis, dict) else None
        asked = mode
        mode = choose_mode(mode, verdict, any(src != "original" for *_x, src in plan))
        if mode == "per-thread":
            try:
                PT.check_signal_masks(pid)
            except PT.PerThreadUnsupported:
                if asked != "auto":
                    raise
                mode = "consistent"
        old_code = list(ranges)

        bindings = {}
        for bd in m.bindings:
            if bd.kind == "function":
                s = tgt.image.function(bd.symbol, bd.file, bd.binding != "global")
            else:
                s = tgt.image.data_object(
                    bd.symbol,
                    bd.file,
                    bd.binding,
                    bd.function,
                    getattr(bd, "target_symbol", None),
                )
            bindings[bd.slot] = tgt.bias + s.value

        # 2. load and bind (the process keeps running), or reuse an earlier, reverted load
        t0 = time.monotonic()
        reuse = next((p for p in patches if p.id == m.id and p.state != "active"), None)
        if reuse is not None:
            base, record_addr, loaded_now = reuse.base, reuse.base + po.span, False
        else:
            near = min(old for _f, _s, old, _c, _src in plan)
            if mode == "per-thread":
                # the remote calls run in a thread asleep in the kernel when there is one; the
                # time it is held counts among the per-thread holds
                lp = L.load(pid, mem, po, near, bindings, tid=PT.quiet_thread(pid))
                result.remote_holds.extend(lp.holds)
            else:
                lp = L.load(pid, mem, po, near, bindings)
            base, record_addr, loaded_now = lp.base, lp.record, True
        result.load_seconds = time.monotonic() - t0

        writes = []
        for f, sym, old, cur, _src in plan:
            new = base + po.symbols[f.new_symbol][0]
            jump = encode_jump(old, new, sym.size)
            writes.append((f, old, new, jump, cur[: len(jump)]))
            result.functions.append(
                Redirect(f.name, old, new, "rel32" if len(jump) == 5 else "abs64")
            )
        gate_page = base + po.span + L.RECORD_SIZE
        ranges.append(CodeRange(gate_page, gate_page + L.GATE_PAGE_SIZE, "activation gates"))
        gates = (
            _prepare_gates(mem, tgt, plan, writes, gate_page)
            if len(writes) > 1 and mode == "consistent"
            else None
        )
        seq = max([p.record.get("seq", 0) for p in patches] + [0]) + 1
        record = {
            "id": m.id,
            "name": m.name,
            "sha256": m.patch_object.sha256,
            "object": so_path,
            "base": base,
            "span": po.span,
            "text": [base + po.text[0], base + po.text[1]],
            "build_id": m.target.build_id,
            "seq": seq,
            "state": "loaded",
            "applied_at": None,
            "gate_page": gate_page,
            "gates": gates,
            "mode": mode,
            "functions": [
                {
                    "name": f.name,
                    "old": old,
                    "new": new,
                    "jump": jump.hex(),
                    "saved": saved.hex(),
                    "room": sym.size,
                }
                for (f, old, new, jump, saved), (_f, sym, _o, _c, _s) in zip(
                    writes, plan, strict=True
                )
            ],
        }
        L.write_record(mem, record_addr, record)
        if mode == "per-thread":
            return _apply_per_thread(
                pid, mem, tgt, plan, writes, old_code, po, base, record, record_addr,
                loaded_now, timeout, result, t_start,
            )  # fmt: skip

        # 3. wait for quiescence and redirect within one pause
        probes = None
        try:
            t0 = time.monotonic()
            probes = ActivationProbes(pid, sites) if sites else None
            result.probe_setup_seconds = time.monotonic() - t0

            def redirect(world: object) -> None:
                if gates:
                    # every entry through its gate (old code still runs), one byte switches all
                    record["state"] = "activating"
                    L.write_record(mem, record_addr, record)
                    for (_f, old, _n, _j, _s), g, (_f2, sym, _o, _c, _src) in zip(
                        writes, gates, plan, strict=True
                    ):
                        mem.write(old, encode_jump(old, g, sym.size))
                    mem.write(gate_page + G.FLAG_OFFSET, b"\x01")
                for _f, old, _new, jump, _saved in writes:
                    mem.write(old, jump)
                record["state"] = "active"
                record["applied_at"] = time.time()
                L.write_record(mem, record_addr, record)

            stats = wait_for_quiescence(pid, mem, ranges, probes, timeout, redirect)
        except BaseException as exc:
            _attach_figures(exc, result, t_start)
            if probes is not None:
                probes.detach()
            _undo_load(pid, mem, base, po.span, record_addr, record, loaded_now)
            raise
        if probes is not None:
            probes.detach()
            result.probe_detach_seconds = probes.detach_seconds
        # the kernel restores only entry bytes that still hold its breakpoint: check ours stayed
        for f, old, _new, jump, _saved in writes:
            if mem.read(old, len(jump)) != jump:
                raise OpusError(
                    f"the jump at {f.name} was changed after it was written; run "
                    f"`opus-bpf status --pid {pid}`"
                )
        return result.take(stats, t_start)


def _apply_per_thread(
    pid: int,
    mem: ProcessMemory,
    tgt: _Target,
    plan: list,
    writes: list,
    old_code: list[CodeRange],
    po: L.PatchObject,
    base: int,
    record: dict,
    record_addr: int,
    loaded_now: bool,
    timeout: float,
    result: ApplyResult,
    t_start: float,
) -> ApplyResult:
    """New calls to the new code at once, old activations retired thread by thread."""
    gate_page = record["gate_page"]
    switches = [PT.Switch(f.name, old, saved, jump, new) for f, old, new, jump, saved in writes]
    sites = []
    for (f, sym, _old, _cur, _src), (_f, _o, _n, jump, _s) in zip(plan, writes, strict=True):
        pieces = tgt.image.function_pieces(sym)
        for addr in PT.exit_sites(tgt.image.path, pieces, f.name, sym.value + len(jump)):
            sites.append(ProbeSite(tgt.image.path, addr, f.name))
    record["state"] = "activating"
    L.write_record(mem, record_addr, record)
    try:
        st = PT.activate(
            pid,
            mem,
            switches,
            gate_page + TH.TRAP_OFFSET,
            old_code,
            _new_code(record),
            sites,
            timeout,
        )
    except BaseException as exc:
        stats = _attach_figures(exc, result, t_start)
        try:
            back = all(mem.read(old, len(saved)) == saved for _f, old, _n, _j, saved in writes)
        except OSError:
            back = False
        if back and stats is not None and not getattr(exc, "new_code_busy", True):
            # switched back and the handler removed: no thread can reach the object any more
            _undo_load(pid, mem, base, po.span, record_addr, record, loaded_now)
        elif back:
            record["state"] = "reverted"
            with contextlib.suppress(Exception):
                L.write_record(mem, record_addr, record)
        raise
    record["state"] = "active"
    record["applied_at"] = time.time()
    L.write_record(mem, record_addr, record)
    for f, old, _new, jump, _saved in writes:
        if mem.read(old, len(jump)) != jump:
            raise OpusError(
                f"the jump at {f.name} was changed after it was written; run "
                f"`opus-bpf status --pid {pid}`"
            )
    return result.take_per_thread(st, t_start)


def _revert_per_thread(
    pid: int,
    mem: ProcessMemory,
    p: PatchState,
    po: L.PatchObject,
    record: dict,
    record_addr: int,
    timeout: float,
    result: ApplyResult,
    t_start: float,
) -> ApplyResult:
    """Old entries back at once (a trap meanwhile runs the new code), then new activations
    retired thread by thread. On timeout the patch is switched on again, whole."""
    switches, sites = [], []
    for f in record["functions"]:
        jump, saved = bytes.fromhex(f["jump"]), bytes.fromhex(f["saved"])
        cur = mem.read(f["old"], len(jump))
        switches.append(PT.Switch(f["name"], f["old"], cur, saved, f["new"]))
        sym = next((v for n, v in po.symbols.items() if p.base + v[0] == f["new"]), None)
        if sym is not None and sym[1] > len(jump):
            lo, hi = sym[0], sym[0] + sym[1]
            for addr in PT.exit_sites(p.object_path, [(lo, hi)], f["name"], lo + 1):
                sites.append(ProbeSite(p.object_path, addr, f["name"]))
    record["state"] = "deactivating"
    record["mode"] = "per-thread"
    L.write_record(mem, record_addr, record)
    try:
        st = PT.activate(
            pid,
            mem,
            switches,
            record["gate_page"] + TH.TRAP_OFFSET,
            _new_code(record),
            [],  # on timeout the patch goes back on: old activations may finish as they are
            sites,
            timeout,
        )
    except BaseException as exc:
        if _attach_figures(exc, result, t_start) is not None:
            record["state"] = "active"
            with contextlib.suppress(Exception):
                L.write_record(mem, record_addr, record)
        raise
    if record.get("gates"):
        mem.write(record["gate_page"] + G.FLAG_OFFSET, b"\x00")
    record["state"] = "reverted"
    L.write_record(mem, record_addr, record)
    return result.take_per_thread(st, t_start)


def _new_code(record: dict) -> list[CodeRange]:
    text = record["text"]
    gp = record["gate_page"]
    return [
        CodeRange(text[0], text[1], f"the new code of {record['name']}"),
        CodeRange(gp, gp + L.GATE_PAGE_SIZE, "activation gates and trap handler"),
    ]


def _prepare_gates(
    mem: ProcessMemory, tgt: _Target, plan: list, writes: list, gate_page: int
) -> list[int] | None:
    """Write one activation gate per function (flag clear) into the gate page; None when some
    function's first instructions cannot be displaced (then jumps are written one by one)."""
    codes = []
    for i, ((_f, sym, old, cur, src), (_f2, _old, new, _jump, _saved)) in enumerate(
        zip(plan, writes, strict=True)
    ):
        gate = gate_page + G.FIRST_GATE + i * G.GATE_SIZE
        if src == "original":
            head = G.displaced(tgt.image.path, sym.value, tgt.image.function_pieces(sym))
            if head is None:
                return None
            resume = old + sum(len(x.raw) for x in head)
        else:
            head, resume = None, decode_jump(old, cur)
        code = G.gate_code(gate, gate_page + G.FLAG_OFFSET, new, tgt.bias, head, resume)
        if code is None or len(encode_jump(old, gate, sym.size)) != 5:
            return None
        codes.append((gate, code))
    if (len(codes) + 1) * G.GATE_SIZE > TH.TRAP_OFFSET:
        return None
    mem.write(gate_page + G.FLAG_OFFSET, b"\x00")
    for gate, code in codes:
        mem.write(gate, code)
    return [g for g, _c in codes]


def _attach_figures(
    exc: BaseException, result: ApplyResult, t_start: float
) -> WaitStats | PT.PerThreadStats | None:
    """Give a timed-out wait's figures (either mode) to whoever records metrics (exc.result);
    returns them, None when the failure was not a timeout."""
    stats = getattr(exc, "stats", None)
    if stats is None:
        return None
    result.outcome = "timeout"
    if isinstance(stats, PT.PerThreadStats):
        exc.result = result.take_per_thread(stats, t_start)  # type: ignore[attr-defined]
    else:
        exc.result = result.take(stats, t_start, succeeded=False)  # type: ignore[attr-defined]
    return stats


def _undo_load(
    pid: int,
    mem: ProcessMemory,
    base: int,
    span: int,
    record_addr: int,
    record: dict,
    loaded_now: bool,
) -> None:
    """Leave the process as it was: unmap what this apply mapped, or mark a reused load idle."""
    try:
        if loaded_now and os.path.exists(f"/proc/{pid}"):
            rc = RemoteCaller(pid, mem)
            try:
                L.unload(rc, base, span)
            finally:
                rc.close()
        elif not loaded_now:
            record["state"] = "reverted"
            L.write_record(mem, record_addr, record)
    except Exception:  # noqa: BLE001 - the jumps were never written; an idle mapping is harmless
        pass


@_exit_aware
def revert_bundle(
    bundle_or_id: str, pid: int, timeout: float = 10.0, mode: str = "auto"
) -> ApplyResult:
    """Restore the old entries of an applied patch once no thread is inside its new code."""
    t_start = time.monotonic()
    check_privileges()
    check_pid(pid)
    want = bundle_or_id
    if os.path.exists(bundle_or_id):
        want = _read_bundle(bundle_or_id).manifest.id
    with ProcessMemory(pid) as mem:
        patches = loaded_patches(pid, mem)
        match = [
            p
            for p in patches
            if p.state in ("active", "interrupted", "switching") and want in (p.id, p.name)
        ]
        if not match:
            raise NotApplied(
                f"patch {want} is not applied to process {pid}; see `opus-bpf status --pid {pid}`"
            )
        p = match[-1]
        for fs in p.functions:
            if fs.state.startswith("stacked-under:"):
                top = fs.state.split(":", 1)[1]
                raise NotApplied(f"patch {top} is stacked on {p.name} ({fs.name}); revert it first")
            if fs.state not in ("active", "trap", "original") and not fs.state.startswith(
                "inactive"
            ):
                raise OpusError(
                    f"the entry of {fs.name} no longer holds this patch's jump; "
                    "refusing to restore bytes over unknown code"
                )
        po = L.read_patch_object(p.object_path)
        text = p.record["text"]
        ranges = [CodeRange(text[0], text[1], f"the new code of {p.name}")]
        if p.record.get("gate_page"):
            gp = p.record["gate_page"]
            ranges.append(CodeRange(gp, gp + L.GATE_PAGE_SIZE, "activation gates"))
        sites = []
        for f in p.record["functions"]:
            sites.append(ProbeSite(p.object_path, f["new"] - p.base, f["name"]))
        result = ApplyResult("revert", pid, p.id, p.name, outcome="reverted")
        for f in p.record["functions"]:
            result.functions.append(
                Redirect(
                    f["name"], f["old"], f["new"], "rel32" if len(f["jump"]) == 10 else "abs64"
                )
            )
        record = dict(p.record)
        record_addr = p.base + po.span
        if mode == "auto":
            per_thread = p.record.get("mode") == "per-thread" or p.state == "switching"
            mode = "per-thread" if per_thread else "consistent"
        elif mode not in MODES:
            raise OpusError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode == "per-thread" or p.state == "switching":
            return _revert_per_thread(
                pid, mem, p, po, record, record_addr, timeout, result, t_start
            )
        probes = ActivationProbes(pid, sites)
        try:

            def restore(world: object) -> None:
                gates = record.get("gates")
                if gates:
                    # back through the gates (new code still runs), one byte switches all back
                    for f, g in zip(record["functions"], gates, strict=True):
                        mem.write(f["old"], encode_jump(f["old"], g, f.get("room", 5)))
                    mem.write(record["gate_page"] + G.FLAG_OFFSET, b"\x00")
                for f in record["functions"]:
                    mem.write(f["old"], bytes.fromhex(f["saved"]))
                record["state"] = "reverted"
                L.write_record(mem, record_addr, record)

            stats = wait_for_quiescence(pid, mem, ranges, probes, timeout, restore)
        except BaseException as exc:
            _attach_figures(exc, result, t_start)
            raise
        finally:
            probes.detach()
        result.probe_detach_seconds = probes.detach_seconds
        return result.take(stats, t_start)
