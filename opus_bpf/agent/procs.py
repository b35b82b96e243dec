"""Processes seen from /proc, identified by (pid, start time) so a reused pid is a new process."""

from __future__ import annotations

import os


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """True if `pid` still names the process that started at `started` (and is not a zombie)."""
    st = start_time(pid)
    if st is None or (started is not None and st != started):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rfind(b")") + 2:data.rfind(b")") + 3] not in (b"Z", b"X")
    except OSError:
        return False


def all_pids() -> list[int]:
    """Every process id (thread-group leaders only: /proc lists tids only under task/)."""
    return sorted(int(n) for n in os.listdir("/proc") if n.isdigit())


def exe_link(pid: int) -> str:
    """The executable path as the kernel shows it (may end in ' (deleted)'); '' if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
