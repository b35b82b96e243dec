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


_COMPILED: dict[str, object] = {}  # BPF source name -> loaded BCC module, one per opus-bpf run


def compiled(name: str) -> object:
    """The BCC module of a BPF source, compiled once per opus-bpf process: an apply to several
    processes (--exe/--lib, the agent) would otherwise pay the compile (0.3 s idle, seconds on
    a loaded host) once per process. Probes are attached and detached one by one on it."""
    bpf = _COMPILED.get(name)
    if bpf is None:
        try:
            from bcc import BPF
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise PermissionProblem(
                "the bcc Python module is missing: run scripts/dev.sh setup (Debian python3-bpfcc)"
            ) from exc
        try:
            with _quiet_stderr():
                bpf = BPF(src_file=str(bpf_source(name)))
        except Exception as exc:
            if os.geteuid() != 0:
                raise PermissionProblem(
                    "loading BPF needs root (CAP_BPF); run opus-bpf with sudo"
                ) from exc
            raise
        _COMPILED[name] = bpf
    return bpf


class _Probes:
    """Probes of one BPF source in one process: attached on construction, removed by detach()
    (the compiled program stays for the next process)."""

    source = ""
    tables: tuple[str, ...] = ()

    def __init__(self, pid: int, sites: list[tuple[str, int, str, bool]]) -> None:
        self.pid = pid
        self.detach_seconds = 0.0
        self.attached: list[tuple[str, int, bool]] = []
        t0 = time.monotonic()
        self.bpf = compiled(self.source)
        self.compile_seconds = time.monotonic() - t0
        for t in self.tables:
            self.bpf[t].clear()  # counts left by the previous process
        t0 = time.monotonic()
        try:
            with _quiet_stderr():
                for path, vaddr, fn, ret in sites:
                    if ret:
                        self.bpf.attach_uretprobe(name=path, addr=vaddr, fn_name=fn, pid=pid)
                    else:
                        self.bpf.attach_uprobe(name=path, addr=vaddr, fn_name=fn, pid=pid)
                    self.attached.append((path, vaddr, ret))
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
        self.setup_seconds = self.compile_seconds + self.attach_seconds

    def detach(self) -> None:
        """Remove this process's probes. The kernel only restores an entry byte that still
        holds its own breakpoint, so a jump written over a probed entry survives this."""
        t0 = time.monotonic()
        with _quiet_stderr():
            while self.attached:
                path, vaddr, ret = self.attached.pop()
                with contextlib.suppress(Exception):  # the process may be gone
                    if ret:
                        self.bpf.detach_uretprobe(name=path, addr=vaddr, pid=self.pid)
                    else:
                        self.bpf.detach_uprobe(name=path, addr=vaddr, pid=self.pid)
        self.detach_seconds += time.monotonic() - t0


class ActivationProbes(_Probes):
    """Uprobe + uretprobe per function entry (bpf_progs/activations.c); `live()` is the number
    of activations the probes know of."""

    source = "activations.c"
    tables = ("depth", "totals")

    def __init__(self, pid: int, sites: list[ProbeSite]) -> None:
        super().__init__(
            pid,
            [
                (s.path, s.vaddr, f, r)
                for s in sites
                for f, r in (("on_return", True), ("on_entry", False))
            ],
        )
        self._totals = self.bpf["totals"]

    def _get(self, i: int) -> int:
        return int(self._totals[ctypes.c_int(i)].value)

    def live(self) -> int:
        return self._get(0)

    def hits(self) -> int:
        """Probe hits so far (entries + returns): each one cost the target a trap."""
        return self._get(1) + self._get(2)


class ExitProbes(_Probes):
    """Uprobes on the instructions that leave the old functions (bpf_progs/exits.c): for the
    per-thread apply, a thread's count changing is when to look at it again."""

    source = "exits.c"
    tables = ("exits",)

    def __init__(self, pid: int, sites: list[ProbeSite]) -> None:
        super().__init__(pid, [(s.path, s.vaddr, "on_exit", False) for s in sites])
        self._exits = self.bpf["exits"]

    def count(self, tid: int) -> int:
        v = self._exits.get(ctypes.c_uint32(tid))
        return int(v.value) if v is not None else 0
