"""The object store: patch objects as immutable files that target processes map.

A process maps its patch object from a file (not anonymous memory) so that /proc/PID/maps, perf
and debuggers name it; the file is content-addressed by sha256 so two bundles never collide and
`status` can tell which patch a mapping is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STATE_DIR = Path(os.environ.get("OPUS_BPF_STATE_DIR", "/var/lib/opus-bpf"))


def objects_dir() -> Path:
    return Path(os.environ.get("OPUS_BPF_STATE_DIR", str(STATE_DIR))) / "objects"


def store_object(so_bytes: bytes) -> str:
    """Write the object once (atomically, read-only) and return its path."""
    digest = hashlib.sha256(so_bytes).hexdigest()
    d = objects_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{digest}.so"
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
        return str(path)
    tmp = d / f".{digest}.{os.getpid()}.tmp"
    tmp.write_bytes(so_bytes)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
    return str(path)


def is_patch_object(path: str) -> bool:
    return path.startswith(str(objects_dir()) + "/") and path.endswith(".so")
