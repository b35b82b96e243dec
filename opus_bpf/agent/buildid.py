"""Build-ids of running executables, read once per file version.

Why a cache keyed by (dev, inode, mtime, size): the agent looks at every process at start-up and
at every exec on the host; parsing the same /usr/bin/bash ELF each time would dominate its CPU.
The key changes when a package upgrade replaces the file, so a new build is never mistaken for
the old one. Reading goes through /proc/PID/exe, which still opens a binary an upgrade deleted.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

FileKey = tuple[int, int, int, int]


def read_build_id(path: str) -> str | None:
    """The GNU build-id of an ELF file as lowercase hex, or None (not ELF, no note)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_NOTE":
                    continue
                for note in seg.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"]).lower()
    except (OSError, ELFError, ValueError):
        return None
    return None


class BuildIdCache:
    """LRU of build-ids by file identity; thread-safe because exec events and scans share it."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._data: OrderedDict[FileKey, str | None] = OrderedDict()
        self._lock = threading.Lock()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    @staticmethod
    def file_key(pid: int) -> FileKey | None:
        """(dev, inode, mtime_ns, size) of the process's executable, None if it is gone."""
        try:
            st = os.stat(f"/proc/{pid}/exe")
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def for_path(self, path: str) -> str | None:
        """Build-id of a file the process maps (a shared library), by the same file identity."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self._lookup((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size), path)

    def _lookup(self, key: FileKey, path: str) -> str | None:
        """The cached build-id for a file identity, read from `path` on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
        bid = read_build_id(path)
        with self._lock:
            self.misses += 1
            self._data[key] = bid
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return bid

    def for_libraries(self, pid: int) -> list[str]:
        """Build-ids of the files `pid` maps besides its executable (shared libraries)."""
        try:
            with open(f"/proc/{pid}/maps") as f:
                paths = {
                    ln.split(None, 5)[5].strip()
                    for ln in f
                    if ln.count(" ") >= 5 and "/" in ln and ".so" in ln
                }
        except OSError:
            return []
        out = []
        for path in sorted(paths):
            via = f"/proc/{pid}/root{path}"
            bid = self.for_path(via if os.path.exists(via) else path)
            if bid:
                out.append(bid)
        return out

    def for_pid(self, pid: int) -> str | None:
        """Build-id of the executable `pid` runs; None for kernel threads and vanished pids."""
        key = self.file_key(pid)
        if key is None:
            return None
        return self._lookup(key, f"/proc/{pid}/exe")
