"""Exec events from the kernel, so a restarted process is patched as soon as it starts.

Why BPF and not polling /proc: a poll every N seconds leaves a restarted service running the
unpatched code for up to N seconds and costs a /proc walk each time; the tracepoint
`sched:sched_process_exec` reports each exec once, when it happens. The agent still rescans
/proc periodically, so a lost event (perf buffer overrun, watch not loadable) delays a patch
but never loses it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("opus_bpf.agent")



def bpf_source() -> str:
    """Path of exec_watch.c: the checkout's, or OPUS_BPF_PROGS/exec_watch.c if installed."""
    from opus_bpf.runtime.probes import bpf_source as find

    return str(find("exec_watch.c"))


class ExecWatch:
    """Loads exec_watch.c and calls `on_exec(pid, old_pid, comm)` from a polling thread.

    The same BPF object also holds the call counter program, so `bpf` is shared with
    `CallCounter` (one compile, ~300 ms, instead of two).
    """

    def __init__(self, on_exec: Callable[[int, int, str], None]) -> None:
        self.on_exec = on_exec
        self.bpf = None
        self.lost = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Compile, attach and start polling; raises if BCC or the tracepoint is unavailable."""
        from bcc import BPF  # noqa: PLC0415 - BCC is heavy and only the agent needs it

        self.bpf = BPF(src_file=bpf_source().encode())
        self.bpf["exec_events"].open_perf_buffer(self._event, page_cnt=64, lost_cb=self._lost)
        self._thread = threading.Thread(target=self._poll, name="exec-watch", daemon=True)
        self._thread.start()

    def _event(self, cpu: int, data: object, size: int) -> None:
        ev = self.bpf["exec_events"].event(data)
        try:
            self.on_exec(int(ev.pid), int(ev.old_pid), ev.comm.decode(errors="replace"))
        except Exception:  # a bad callback must not kill the watch
            log.exception("exec callback failed for pid %s", ev.pid)

    def _lost(self, n: int) -> None:
        self.lost += n
        log.warning("exec watch lost %d events; the next /proc scan will catch them", n)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.bpf.perf_buffer_poll(timeout=200)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop polling and detach (BPF.cleanup takes ~200 ms)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
