"""A live process seen from /proc: its mappings, its executable, where an ELF object is loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass

from opus_bpf.errors import NoSuchProcess, PermissionProblem, TargetMismatch
from opus_bpf.target.elf import ElfImage


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


def check_pid(pid: int) -> None:
    """Fail early, in one line, for a pid that is not there or not ours to trace."""
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise NoSuchProcess(f"no such process: {pid} (check the pid with `pgrep -a NAME`)")
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except FileNotFoundError as exc:
        raise NoSuchProcess(f"no such process: {pid}") from exc
    if f"\nTgid:\t{pid}\n" not in status:
        raise NoSuchProcess(f"{pid} is a thread, not a process; give the process id (Tgid)")
    if "State:\tZ" in status:
        raise NoSuchProcess(f"process {pid} is a zombie")
    tracer = [ln for ln in status.splitlines() if ln.startswith("TracerPid:")]
    if tracer and tracer[0].split()[1] != "0":
        raise PermissionProblem(
            f"process {pid} is already traced by pid {tracer[0].split()[1]} (a debugger?); "
            "detach it first"
        )


def check_privileges() -> None:
    """ptrace of another user's process and BPF both need root (CAP_SYS_PTRACE + CAP_BPF)."""
    if os.geteuid() == 0:
        return
    with open("/proc/self/status") as f:
        eff = next((int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:")), 0)
    cap_sys_ptrace, cap_sys_admin, cap_bpf, cap_perfmon = 19, 21, 39, 38
    has = lambda c: bool(eff & (1 << c))  # noqa: E731
    if not (has(cap_sys_ptrace) and (has(cap_bpf) and has(cap_perfmon) or has(cap_sys_admin))):
        raise PermissionProblem(
            "opus-bpf needs root (or CAP_SYS_PTRACE plus CAP_BPF and CAP_PERFMON); run it with sudo"
        )


def read_maps(pid: int) -> list[Mapping]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as exc:
        raise NoSuchProcess(f"no such process: {pid}") from exc
    except PermissionError as exc:
        raise PermissionProblem(f"cannot read /proc/{pid}/maps: run opus-bpf as root") from exc
    out = []
    for ln in lines:
        parts = ln.split(maxsplit=5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        path = parts[5] if len(parts) > 5 else ""
        out.append(Mapping(start, end, parts[1], int(parts[2], 16), int(parts[4]), path))
    return out


def exe_path(pid: int) -> str:
    """The executable's path as mapped (`/proc/PID/exe` opens it even once deleted)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError as exc:
        raise NoSuchProcess(f"no such process: {pid}") from exc


def mapped_objects(pid: int, maps: list[Mapping] | None = None) -> dict[str, list[Mapping]]:
    """File-backed mappings grouped by path, in address order."""
    groups: dict[str, list[Mapping]] = {}
    for m in maps or read_maps(pid):
        if m.path.startswith("/") and m.inode:
            groups.setdefault(m.path, []).append(m)
    return groups


def load_bias(image: ElfImage, mappings: list[Mapping]) -> int:
    """Runtime address minus link-time address for one loaded object (0 for non-PIE executables).

    Taken from the mapping of the first PT_LOAD (file offset 0 is always mapped by the loader).
    """
    if not image.segments:
        raise TargetMismatch(f"{image.path} has no loadable segments")
    first = min(image.segments, key=lambda s: s.vaddr)
    page = os.sysconf("SC_PAGE_SIZE")
    want_off = first.offset & ~(page - 1)
    for m in mappings:
        if m.offset == want_off:
            return m.start - (first.vaddr & ~(page - 1))
    raise TargetMismatch(f"cannot find the first segment of {image.path} in the process mappings")
