"""Calls that reach the new code of each patched function, counted by a BPF uprobe.

Why: "applied" says the entry jump is written; a counter on the new entry shows the patched code
is actually running (and how hot it is). The uprobe costs the target a trap per call (~0.3 us),
so it is off unless the agent runs with --count-calls. Series are (patch_id, function): bounded
by the bundles in the patch directory, never by pid.

The uprobe is attached to the patch object's file at the function's link-time address, for one
pid. The file is reached through /proc/PID/map_files/, so a patch object the loader unlinked
after mapping is still attachable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

from opus_bpf import metrics

log = logging.getLogger("opus_bpf.agent")


def _locate(pid: int, addr: int) -> tuple[str, int] | None:
    """(path usable by BCC, link-time address) of `addr` in `pid`, or None if not file-backed."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    maps = []
    for ln in lines:
        parts = ln.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        maps.append((start, end, int(parts[2], 16), parts[4], parts[0],
                     parts[5] if len(parts) > 5 else ""))
    hit = next((m for m in maps if m[0] <= addr < m[1]), None)
    if hit is None or hit[3] == "0":
        return None
    inode = hit[3]
    base = min((m[0] - m[2] for m in maps if m[3] == inode and m[5] == hit[5]), default=None)
    if base is None:
        return None
    path = hit[5]
    if not path.startswith("/") or path.endswith(" (deleted)") or not os.path.exists(path):
        path = f"/proc/{pid}/map_files/{hit[4]}"
    return path, addr - base


class CallCounter:
    """Attaches `count_call` (exec_watch.c) per patched function; folds counts into metrics."""

    def __init__(self, bpf: object) -> None:
        self.bpf = bpf
        # (tgid, runtime address) -> (patch_id, function); probes per pid for detaching
        self.targets: dict[tuple[int, int], tuple[str, str]] = {}
        self.probes: dict[int, list[tuple[str, int]]] = {}
        self.seen: dict[tuple[int, int], int] = {}

    def watch(self, pid: int, patch_id: str, functions: Iterable[object]) -> None:
        """Count calls to each function's new_address in `pid`."""
        self.probes.setdefault(pid, [])  # looked at, even if nothing could be attached
        for fn in functions:
            addr = int(getattr(fn, "new_address", 0) or 0)
            name = str(getattr(fn, "name", "?"))
            loc = _locate(pid, addr) if addr else None
            if loc is None:
                log.warning("cannot count calls of %s in %d: new code not file-backed", name, pid)
                continue
            path, link_addr = loc
            try:
                self.bpf.attach_uprobe(name=path.encode(), addr=link_addr, fn_name=b"count_call",
                                       pid=pid)
            except Exception as exc:
                log.warning("cannot count calls of %s in %d: %s", name, pid, exc)
                continue
            self.targets[(pid, addr)] = (patch_id, name)
            self.probes.setdefault(pid, []).append((path, link_addr))

    def collect(self) -> None:
        """Add the calls counted since the last collect to opus_bpf_patched_function_calls_total."""
        table = self.bpf["patched_calls"]
        for k, v in table.items():
            key = (int(k.tgid), int(k.ip))
            target = self.targets.get(key) or self.targets.get((key[0], key[1] - 1))
            if target is None:
                continue
            total = int(v.value)
            delta = total - self.seen.get(key, 0)
            self.seen[key] = total
            metrics.count_patched_calls(target[0], target[1], delta)

    def forget(self, pids: Iterable[int]) -> None:
        """Drop probes and counter entries of exited processes."""
        gone = set(pids)
        table = self.bpf["patched_calls"]
        for k in list(table.keys()):
            if int(k.tgid) in gone:
                del table[k]
        for key in [k for k in self.seen if k[0] in gone]:
            del self.seen[key]
        for key in [k for k in self.targets if k[0] in gone]:
            del self.targets[key]
        for pid in gone:
            for path, addr in self.probes.pop(pid, []):
                # the process is gone; the kernel may have dropped the probe with it
                with contextlib.suppress(Exception):
                    self.bpf.detach_uprobe(name=path.encode(), addr=addr, pid=pid)

    def close(self) -> None:
        """Collect once more and detach everything."""
        try:
            self.collect()
        except Exception:
            log.debug("final call collect failed", exc_info=True)
        self.forget(list(self.probes))
