"""Reading and writing another process's memory through /proc/PID/mem.

/proc/PID/mem writes go through FOLL_FORCE, so a root tracer can patch read-only text; the write
lands in the process's private copy of the page (copy-on-write), never in the file on disk.
"""

from __future__ import annotations

import os

from opus_bpf.errors import NoSuchProcess, ProcessExited


class ProcessMemory:
    """One open /proc/PID/mem; use as a context manager."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NoSuchProcess(f"no such process: {pid}") from exc

    def read(self, addr: int, size: int) -> bytes:
        try:
            return os.pread(self.fd, size, addr)
        except OSError as exc:
            if not os.path.exists(f"/proc/{self.pid}"):
                raise ProcessExited(f"process {self.pid} exited") from exc
            raise

    def write(self, addr: int, data: bytes) -> None:
        try:
            n = os.pwrite(self.fd, data, addr)
        except OSError as exc:
            if not os.path.exists(f"/proc/{self.pid}"):
                raise ProcessExited(f"process {self.pid} exited") from exc
            raise
        if n != len(data):
            raise OSError(f"short write to process {self.pid} at {addr:#x}: {n}/{len(data)}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ProcessMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
