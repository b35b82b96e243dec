"""BCC uprobes/uretprobes that count live activations of the functions about to be replaced.

The count says *when* it is worth stopping the process to look; it cannot say *that* no thread
is inside (activations that began before attach are invisible, longjmp leaves counts high), so
the stack check of stopped threads always decides.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from opus_bpf.errors import OpusError, PermissionProblem, ProcessExited

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf_progs"


def bpf_dirs() -> list[Path]:
    """Where the BPF C sources may be: $OPUS_BPF_PROGS, the checkout, or an installed share/."""
    env = os.environ.get("OPUS_BPF_PROGS")
    return [
        *([Path(env)] if env else []),
        BPF_DIR,
        Path(sys.prefix, "share", "opus-bpf", "bpf_progs"),
    ]


def bpf_source(name: str) -> Path:
    for d in bpf_dirs():
        if (d / name).exists():
            return d / name
    raise OpusError(
        f"BPF program {name} is missing from this installation (looked in "
        f"{', '.join(map(str, bpf_dirs()))}); reinstall opus-bpf"
    )


@dataclass(frozen=True)
class ProbeSite:
    """Where to probe: an ELF file and the link-time address of a function entry in it."""

    path: str
    vaddr: int
    name: str


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
    """libbcc prints to fd 2 itself; keep that off the user's one-line errors, but keep the text."""
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.extend(tmp.read().decode(errors="replace").splitlines())


class ActivationProbes:
    """Attach on construction; `live()` is the number of activations the probes know of."""

    def __init__(self, pid: int, sites: list[ProbeSite]) -> None:
        try:
            from bcc import BPF
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise PermissionProblem(
                "the bcc Python module is missing: run scripts/dev.sh setup (Debian python3-bpfcc)"
            ) from exc
        self.detach_seconds = 0.0
        self.bpf = None
        t0 = time.monotonic()
        try:
            with _quiet_stderr():
                self.bpf = BPF(src_file=str(bpf_source("activations.c")))
        except Exception as exc:
            if os.geteuid() != 0:
                raise PermissionProblem(
                    "loading BPF needs root (CAP_BPF); run opus-bpf with sudo"
                ) from exc
            raise
        self.compile_seconds = time.monotonic() - t0
        t0 = time.monotonic()
        self.attached = False
        try:
            with _quiet_stderr():
                for s in sites:
                    self.bpf.attach_uretprobe(
                        name=s.path, addr=s.vaddr, fn_name="on_return", pid=pid
                    )
                    self.bpf.attach_uprobe(name=s.path, addr=s.vaddr, fn_name="on_entry", pid=pid)
            self.attached = True
        except BaseException as exc:
            self.detach()
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessExited(
                    f"process {pid} exited while probes were being attached"
                ) from exc
            if isinstance(exc, Exception) and not isinstance(exc, OpusError):
                raise OpusError(f"cannot attach BPF probes to process {pid}: {exc}") from exc
            raise
        self.attach_seconds = time.monotonic() - t0
        self._totals = self.bpf["totals"]

    def _get(self, i: int) -> int:
        return int(self._totals[ctypes.c_int(i)].value)

    def live(self) -> int:
        return self._get(0)

    def hits(self) -> int:
        """Probe hits so far (entries + returns): each one cost the target a trap."""
        return self._get(1) + self._get(2)

    def detach(self) -> None:
        """Remove every probe. The kernel only restores an entry byte that still holds its own
        breakpoint, so a jump written over a probed entry survives this."""
        t0 = time.monotonic()
        bpf = getattr(self, "bpf", None)
        if bpf is not None:
            bpf.cleanup()
            self.bpf = None
        self.detach_seconds += time.monotonic() - t0


class ExitProbes:
    """Uprobes on the instructions that leave the old functions (bpf_progs/exits.c): for the
    per-thread apply, a thread's count changing is when to look at it again."""

    def __init__(self, pid: int, sites: list[ProbeSite]) -> None:
        from bcc import BPF

        self.bpf = None
        self.detach_seconds = 0.0
        t0 = time.monotonic()
        try:
            with _quiet_stderr():
                self.bpf = BPF(src_file=str(bpf_source("exits.c")))
                for s in sites:
                    self.bpf.attach_uprobe(name=s.path, addr=s.vaddr, fn_name="on_exit", pid=pid)
        except BaseException as exc:
            self.detach()
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessExited(f"process {pid} exited while probes were attached") from exc
            if isinstance(exc, Exception) and not isinstance(exc, OpusError):
                raise OpusError(f"cannot attach BPF probes to process {pid}: {exc}") from exc
            raise
        self.setup_seconds = time.monotonic() - t0
        self._exits = self.bpf["exits"]

    def count(self, tid: int) -> int:
        v = self._exits.get(ctypes.c_uint32(tid))
        return int(v.value) if v is not None else 0

    def detach(self) -> None:
        t0 = time.monotonic()
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
        self.detach_seconds += time.monotonic() - t0
