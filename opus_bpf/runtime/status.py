"""What is applied in a process, read from the process itself.

Each loaded patch object is a file mapping from the object store, followed by its patch record
page; each replaced function's entry either holds the jump that record says was written (active
and on top), a jump into a later patch stacked on it, or something else (reported as wrong).
Nothing here depends on opus-bpf having remembered anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opus_bpf.runtime.gate import FLAG_OFFSET, gate_target
from opus_bpf.runtime.loader import read_patch_object, read_record
from opus_bpf.runtime.memory import ProcessMemory
from opus_bpf.runtime.redirect import decode_jump
from opus_bpf.runtime.store import is_patch_object
from opus_bpf.target.process import check_pid, read_maps


@dataclass
class FunctionState:
    name: str
    old_address: int
    new_address: int
    state: str  # "active" | "stacked-under:<id>" | "reverted" | "modified"
    entry_ok: bool


@dataclass
class PatchState:
    id: str
    name: str
    state: str  # "active" | "reverted" | "loaded" (mapped, never activated)
    object_path: str
    base: int
    record: dict
    functions: list[FunctionState] = field(default_factory=list)

    @property
    def entry_ok(self) -> bool:
        return all(f.entry_ok for f in self.functions)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "object": self.object_path,
            "base": hex(self.base),
            "applied_at": self.record.get("applied_at"),
            "entry_ok": self.entry_ok,
            "activation": "gated" if self.record.get("gates") else "direct",
            "functions": [
                {
                    "name": f.name,
                    "old_address": hex(f.old_address),
                    "new_address": hex(f.new_address),
                    "state": f.state,
                    "entry_ok": f.entry_ok,
                }
                for f in self.functions
            ],
        }


def loaded_patches(pid: int, mem: ProcessMemory) -> list[PatchState]:
    """Every patch object mapped in the process, with its record, oldest first."""
    maps = read_maps(pid)
    seen: dict[str, int] = {}
    for m in maps:
        if is_patch_object(m.path) and m.offset == 0:
            seen.setdefault(f"{m.path}@{m.start:x}", m.start)
    out = []
    for key, base in seen.items():
        path = key.rsplit("@", 1)[0]
        try:
            span = read_patch_object(path).span
        except Exception:  # noqa: BLE001 - an object file removed from the store
            continue
        rec = read_record(mem, base + span)
        if rec is None or rec.get("base") != base:
            continue
        state = rec["state"]
        if state in ("activating", "deactivating") and rec.get("mode") == "per-thread":
            # opus-bpf stopped during a per-thread switch: entries hold a trap byte that the
            # SIGTRAP handler in the process answers (calls run the new code) or their final bytes
            state = "switching"
        elif state == "activating":
            # opus-bpf stopped between routing the entries through the gates and the end: the
            # gate flag says which code runs, for every function at once
            flag = mem.read(rec["gate_page"] + FLAG_OFFSET, 1)
            state = "active" if flag == b"\x01" else "interrupted"
        out.append(PatchState(rec["id"], rec["name"], state, path, base, rec))
    out.sort(key=lambda p: p.record.get("seq", 0))
    by_new: dict[int, PatchState] = {}
    for p in out:
        for f in p.record["functions"]:
            by_new[f["new"]] = p
    for p in out:
        for f in p.record["functions"]:
            jump = bytes.fromhex(f["jump"])
            cur = mem.read(f["old"], len(jump))
            gated = p.record.get("gates") and gate_target(f["old"], cur, p.record["gate_page"])
            if p.state == "switching":
                saved = bytes.fromhex(f["saved"])
                if cur == jump:
                    st, ok = "active", True
                elif cur[:1] == b"\xcc":
                    st, ok = "trap", True
                elif cur == saved[: len(cur)]:
                    st, ok = "original", True
                else:
                    st, ok = "modified", False
            elif p.state == "interrupted":
                st, ok = "inactive (through its gate: old code runs)", bool(gated) or cur != jump
            elif p.state != "active":
                st, ok = p.state, cur != jump
            elif cur == jump or gated:
                st, ok = "active", True
            else:
                dest = decode_jump(f["old"], cur)
                top = by_new.get(dest) if dest is not None else None
                if top is not None and top.state == "active" and top is not p:
                    st, ok = f"stacked-under:{top.id}", True
                else:
                    st, ok = "modified", False
            p.functions.append(FunctionState(f["name"], f["old"], f["new"], st, ok))
    return out


def process_status(pid: int) -> list[PatchState]:
    check_pid(pid)
    with ProcessMemory(pid) as mem:
        return loaded_patches(pid, mem)
