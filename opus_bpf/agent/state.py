"""What the agent applied on this host, kept as JSON so a restarted agent knows it.

Why on disk: after an agent restart, re-applying a patch a process already has would be refused
(or worse, stacked); the record says which (pid, start time) has which bundle. Entries whose
process is gone, or whose pid now belongs to another process (start time differs), are dropped.
Writes are atomic (temp file + rename) so a crash never leaves half a record.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from opus_bpf.agent import procs

STATE_VERSION = 1


@dataclass
class AppliedPatch:
    id: str
    name: str
    bundle: str
    functions: list[str]
    applied_at: float


@dataclass
class ProcessRecord:
    pid: int
    start_time: int | None
    exe: str
    build_id: str
    patches: list[AppliedPatch] = field(default_factory=list)

    def has(self, patch_id: str) -> bool:
        return any(p.id == patch_id for p in self.patches)


class State:
    """The record, keyed by pid; `save()` after every change."""

    def __init__(self, state_dir: str) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, "state.json")
        self.processes: dict[int, ProcessRecord] = {}
        self._lock = threading.RLock()

    def load(self) -> None:
        """Read the record; a missing or unreadable file starts empty (and is kept aside)."""
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, json.JSONDecodeError):
            os.replace(self.path, self.path + f".corrupt-{int(time.time())}")
            return
        with self._lock:
            for p in raw.get("processes", []):
                rec = ProcessRecord(
                    pid=int(p["pid"]), start_time=p.get("start_time"), exe=p.get("exe", ""),
                    build_id=p.get("build_id", ""),
                    patches=[AppliedPatch(**a) for a in p.get("patches", [])],
                )
                self.processes[rec.pid] = rec

    def save(self) -> None:
        """Write atomically: temp file in the same directory, fsync, rename."""
        with self._lock:
            data = {
                "version": STATE_VERSION,
                "written_at": time.time(),
                "processes": [asdict(r) for r in sorted(self.processes.values(),
                                                        key=lambda r: r.pid)],
            }
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state.", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def prune(self) -> list[int]:
        """Drop records of processes that exited or whose pid was reused; returns those pids."""
        with self._lock:
            gone = [pid for pid, r in self.processes.items()
                    if not procs.alive(pid, r.start_time)]
            for pid in gone:
                del self.processes[pid]
        return gone

    def record(self, pid: int, start_time: int | None, exe: str, build_id: str,
               patch: AppliedPatch) -> None:
        """Note that `patch` is now applied in `pid` (stacking on earlier patches)."""
        with self._lock:
            rec = self.processes.get(pid)
            if rec is None or rec.start_time != start_time:
                rec = ProcessRecord(pid, start_time, exe, build_id)
                self.processes[pid] = rec
            if not rec.has(patch.id):
                rec.patches.append(patch)

    def forget_patch(self, pid: int, patch_id: str) -> None:
        """Note a revert."""
        with self._lock:
            rec = self.processes.get(pid)
            if rec:
                rec.patches = [p for p in rec.patches if p.id != patch_id]
                if not rec.patches:
                    del self.processes[pid]

    def applied(self, pid: int, start_time: int | None) -> set[str]:
        """Patch ids recorded for this exact process."""
        with self._lock:
            rec = self.processes.get(pid)
            if rec is None or rec.start_time != start_time:
                return set()
            return {p.id for p in rec.patches}

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(patched processes per patch id, functions per patch id) for the gauges."""
        procs_n: dict[str, int] = {}
        funcs: dict[str, int] = {}
        with self._lock:
            for r in self.processes.values():
                for p in r.patches:
                    procs_n[p.id] = procs_n.get(p.id, 0) + 1
                    funcs[p.id] = len(p.functions)
        return procs_n, funcs

    def snapshot(self) -> list[dict]:
        """JSON-able copy for the /status endpoint."""
        with self._lock:
            return [asdict(r) for r in sorted(self.processes.values(), key=lambda r: r.pid)]
