"""The long-running agent: keep every matching process on this host patched.

What it does, in order of importance:
1. At start, and every `rescan_interval`, reads the patch directory and walks /proc: each process
   whose executable has a bundle's target build-id gets that bundle (bundles stack in file-name
   order). The build-id of each executable file is read once (cache by dev, inode, mtime, size).
2. Between scans, exec events (BPF tracepoint sched:sched_process_exec) bring each new process
   to it `exec_delay` seconds after it starts, so a restarted service is patched again.
3. It keeps a JSON record of what it applied (state_dir/state.json) and exports the metrics.

Everything that touches a process happens on one thread (the loop), one operation at a time: the
runtime holds threads of the target with ptrace, and two operations on one target must not
interleave. Exec events only enqueue pids.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opus_bpf import metrics
from opus_bpf.agent import procs
from opus_bpf.agent.apply import ALREADY, GIVE_UP, GONE, apply_one, classify, process_patches
from opus_bpf.agent.buildid import BuildIdCache
from opus_bpf.agent.bundles import BundleInfo, scan_patch_dir
from opus_bpf.agent.httpd import make_app, serve_http
from opus_bpf.agent.state import AppliedPatch, State

log = logging.getLogger("opus_bpf.agent")

#: Seconds before retrying a failed apply: 1st, 2nd, ... retry; then give up until the bundle
#: file changes. A busy function (timeout) is the usual reason; backing off keeps the agent from
#: probing a hot target continuously.
BACKOFF = (1.0, 5.0, 30.0, 120.0, 600.0)


@dataclass
class _Failure:
    count: int
    next_try: float
    outcome: str
    message: str
    given_up: bool = False


class Agent:
    """One agent per host. `run()` blocks until `stop()` (or SIGTERM via `serve`)."""

    def __init__(
        self,
        patch_dir: str,
        state_dir: str,
        timeout: float = 10.0,
        rescan_interval: float = 60.0,
        exec_delay: float = 0.2,
        exec_watch: bool = True,
        count_calls: bool = False,
    ) -> None:
        self.patch_dir = patch_dir
        self.state = State(state_dir)
        self.timeout = timeout
        self.rescan_interval = rescan_interval
        self.exec_delay = exec_delay
        self.want_exec_watch = exec_watch
        self.want_count_calls = count_calls
        self.cache = BuildIdCache()
        self.bundles: list[BundleInfo] = []
        self.by_build_id: dict[str, list[BundleInfo]] = {}
        self.failures: dict[tuple[int, int | None, str, int], _Failure] = {}
        self.watch = None
        self.calls = None
        self._events: queue.Queue[tuple[str, int]] = queue.Queue()
        self._timers: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._patch_dir_sig: tuple = ()
        self.last_scan = 0.0
        self.http = None
        self.started_at = time.time()
        self._watch_thread: threading.Thread | None = None
        self.watch_failed = ""

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, listen: str | None) -> None:
        """Load state and bundles, serve HTTP, attach the exec watch (falls back to scans)."""
        self.state.load()
        gone = self.state.prune()
        if gone:
            log.info("forgot %d processes that exited while the agent was down", len(gone))
        self.state.save()
        self.reload_bundles(force=True)
        # BCC compiles the watch in the background (0.3 s on a quiet host, tens of seconds on a
        # loaded one) so /metrics and /healthz answer at once; run() waits for it before the
        # first scan, because the runtime compiles its probes with BCC too and two compiles in
        # one process at once crash libbcc/LLVM. Watch first, then scan: no exec falls between.
        metrics.set_exec_watch_up(False)
        if self.want_exec_watch:
            self._watch_thread = threading.Thread(
                target=self._start_exec_watch, name="exec-watch-load", daemon=True
            )
            self._watch_thread.start()
        self._update_gauges()  # before the first scrape can see them
        if listen:
            self.http, _ = serve_http(listen, make_app(self.status, self.health))
            log.info("serving /metrics on %s", listen)

    def _start_exec_watch(self) -> None:
        from opus_bpf.agent.execwatch import ExecWatch  # noqa: PLC0415

        t0 = time.monotonic()
        w = ExecWatch(self.on_exec)
        try:
            w.start()
        except Exception as exc:  # no BCC, no headers, no privileges: degrade to periodic scans
            log.warning(
                "exec watch unavailable (%s); restarted processes are patched at the "
                "next scan (every %.0f s)",
                exc,
                self.rescan_interval,
            )
            self.watch_failed = str(exc)
            return
        if self._stop.is_set():  # the agent stopped while BCC was compiling
            w.stop()
            return
        if self.want_count_calls:
            from opus_bpf.agent.calls import CallCounter  # noqa: PLC0415

            self.calls = CallCounter(w.bpf)
        self.watch = w
        metrics.set_exec_watch_up(True)
        log.info("exec watch attached (sched:sched_process_exec) in %.1f s", time.monotonic() - t0)

    def stop(self) -> None:
        """Ask `run()` to return; safe from a signal handler or another thread."""
        self._stop.set()
        self._events.put(("wake", 0))

    def close(self) -> None:
        """Detach BPF and stop HTTP (patches stay applied: the agent exiting changes nothing)."""
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=0.5)  # a compile in progress is abandoned
        if self.calls is not None:
            self.calls.close()
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        metrics.set_exec_watch_up(False)
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        self.state.save()

    # ---- events ----------------------------------------------------------------------------

    def on_exec(self, pid: int, old_pid: int, comm: str) -> None:
        """From the exec-watch thread: only enqueue."""
        self._events.put(("exec", pid))

    def request_scan(self) -> None:
        """Rescan the patch directory and /proc now (SIGHUP)."""
        self._events.put(("scan", 0))

    def _schedule(self, due: float, kind: str, pid: int) -> None:
        heapq.heappush(self._timers, (due, next(self._seq), kind, pid))

    def run(self) -> None:
        """The loop: exec events, timers, periodic scans, state pruning, gauges."""
        while (
            self._watch_thread is not None
            and self._watch_thread.is_alive()
            and not self._stop.is_set()
        ):
            self._watch_thread.join(timeout=0.2)  # no apply (BCC compile) during its compile
        self._guard(self.scan)
        next_scan = time.monotonic() + self.rescan_interval
        next_tick = time.monotonic() + 2.0
        while not self._stop.is_set():
            now = time.monotonic()
            due = min(next_scan, next_tick, self._timers[0][0] if self._timers else next_scan)
            try:
                kind, pid = self._events.get(timeout=max(0.0, due - now))
            except queue.Empty:
                kind, pid = "", 0
            if kind == "exec":
                metrics.agent_examined("exec")
                self._schedule(time.monotonic() + self.exec_delay, "check", pid)
            elif kind == "scan":
                self._guard(self.scan)
                next_scan = time.monotonic() + self.rescan_interval
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now and not self._stop.is_set():
                _, _, tkind, tpid = heapq.heappop(self._timers)
                if tkind == "check":
                    self._guard(self.check_process, tpid)
            if now >= next_scan:
                self._guard(self.scan)
                next_scan = time.monotonic() + self.rescan_interval
            if now >= next_tick:
                self._guard(self.tick)
                next_tick = time.monotonic() + 2.0

    @staticmethod
    def _guard(fn: Callable[..., object], *args: object) -> None:
        """One bad process or bundle must not stop the agent keeping the others patched."""
        try:
            fn(*args)
        except Exception:
            log.exception("agent step %s%r failed; continuing", fn.__name__, args)

    def tick(self) -> None:
        """Every 2 s: forget exited processes, read call counters, refresh gauges."""
        gone = self.state.prune()
        if gone:
            self.state.save()
            if self.calls is not None:
                self.calls.forget(gone)
        for key in [k for k in self.failures if not procs.alive(k[0], k[1])]:
            del self.failures[key]
        if self.calls is not None:
            self.calls.collect()
        self._update_gauges()

    # ---- work ------------------------------------------------------------------------------

    def reload_bundles(self, force: bool = False) -> bool:
        """Re-read the patch directory if anything in it changed; True if it did."""
        try:
            sig = tuple(
                sorted(
                    (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                    for e in os.scandir(self.patch_dir)
                    if e.is_file()
                )
            )
        except FileNotFoundError:
            sig = ()
        if sig == self._patch_dir_sig and not force:
            return False
        self._patch_dir_sig = sig
        bundles, refused = scan_patch_dir(self.patch_dir)
        for r in refused:
            log.error("refusing bundle (%s): %s", r.reason, r.message)
            metrics.bundle_verification_failed(r.reason)
        seen: set[str] = set()
        kept: list[BundleInfo] = []
        for b in bundles:
            if b.id in seen:
                log.warning("ignoring %s: bundle id %s already used by another file", b.path, b.id)
                continue
            seen.add(b.id)
            kept.append(b)
        self.bundles = kept
        self.by_build_id = {}
        for b in kept:
            self.by_build_id.setdefault(b.build_id, []).append(b)
        metrics.set_agent_bundles(len(kept))
        log.info("%d bundles for %d builds in %s", len(kept), len(self.by_build_id), self.patch_dir)
        return True

    def scan(self) -> None:
        """Walk /proc and bring every matching process up to date."""
        self.reload_bundles()
        pids = procs.all_pids()
        metrics.agent_examined("scan", len(pids))
        if self.by_build_id:
            me = os.getpid()
            for pid in pids:
                if self._stop.is_set():
                    break
                if pid != me:
                    self.check_process(pid)
        self.last_scan = time.time()
        metrics.scan_finished(self.last_scan)
        self.tick()

    def check_process(self, pid: int) -> None:
        """Apply, in order, every bundle for this process's executable and shared libraries
        that it does not have yet (a libexpat fix reaches every process that maps libexpat)."""
        exe = self.cache.for_pid(pid)
        bids = [exe] if exe in self.by_build_id else []
        if self.library_bundles:
            bids += [
                b for b in self.cache.for_libraries(pid) if b in self.by_build_id and b not in bids
            ]
        for bid in bids:
            self._check_build(pid, bid)

    @property
    def library_bundles(self) -> bool:
        """Whether any bundle targets a shared library (else libraries need not be read)."""
        return any(
            ".so" in os.path.basename(b.target_path) for bs in self.by_build_id.values() for b in bs
        )

    def _check_build(self, pid: int, bid: str) -> None:
        started = procs.start_time(pid)
        if started is None:
            return
        have = self._reconcile(pid, started, bid)
        for b in self.by_build_id[bid]:
            if b.id in have:
                continue
            if not self._apply(b, pid, started, bid):
                break  # later bundles stack on this one: do not skip over it

    def _reconcile(self, pid: int, started: int, build_id: str) -> set[str]:
        """Patch ids this process has (or had and an operator reverted): not to be applied.

        Brings the record in line with what the process says: patches applied by hand are
        adopted (so the gauges count them), patches reverted by hand are forgotten and stay
        reverted. Without a readable status, the record alone decides.
        """
        status = process_patches(pid)
        if status is None:
            return self.state.applied(pid, started)
        ours = {b.id: b for b in self.by_build_id.get(build_id, [])}
        active = {str(p.id): p for p in status if getattr(p, "state", "") == "active"}
        reverted = {str(p.id) for p in status if getattr(p, "state", "") == "reverted"}
        changed = False
        for pid_ in self.state.applied(pid, started) - set(active):
            self.state.forget_patch(pid, pid_)
            changed = True
        recorded = self.state.applied(pid, started)
        for patch_id, p in active.items():
            if patch_id in ours and patch_id not in recorded:
                log.info("pid %d already has %s (applied outside the agent)", pid, patch_id)
                self._record(ours[patch_id], pid, started, build_id, p, save=False)
                changed = True
        if changed:
            self.state.save()
        if self.calls is not None and pid not in self.calls.probes:
            for patch_id, p in active.items():
                if patch_id in ours:
                    self.calls.watch(pid, patch_id, getattr(p, "functions", []))
        return set(active) | reverted

    def _apply(self, b: BundleInfo, pid: int, started: int, build_id: str) -> bool:
        key = (pid, started, b.id, b.mtime_ns)
        f = self.failures.get(key)
        if f is not None and (f.given_up or time.monotonic() < f.next_try):
            return False
        try:
            result = metrics.run_observed("apply", lambda: apply_one(b, pid, self.timeout))
        except Exception as exc:
            outcome, action = classify(exc)
            msg = getattr(exc, "message", str(exc))
            if action == ALREADY:
                self._record(b, pid, started, build_id, None)
                return True
            if action == GONE:
                self.failures.pop(key, None)
                return False
            count = (f.count if f else 0) + 1
            give_up = action == GIVE_UP or count > len(BACKOFF)
            delay = BACKOFF[min(count, len(BACKOFF)) - 1]
            self.failures[key] = _Failure(count, time.monotonic() + delay, outcome, msg, give_up)
            if give_up:
                log.error(
                    "%s not applied to pid %d (%s): %s; giving up until the bundle changes",
                    b.name,
                    pid,
                    outcome,
                    msg,
                )
            else:
                log.warning(
                    "%s not applied to pid %d (%s): %s; retry in %.0f s",
                    b.name,
                    pid,
                    outcome,
                    msg,
                    delay,
                )
                self._schedule(time.monotonic() + delay, "check", pid)
            return False
        self.failures.pop(key, None)
        self._record(b, pid, started, build_id, result)
        log.info(
            "applied %s (%s) to pid %d: wait %.1f ms, pause %.0f us",
            b.name,
            b.id,
            pid,
            1e3 * float(getattr(result, "wait_seconds", 0.0)),
            1e6 * float(getattr(result, "pause_seconds", 0.0)),
        )
        return True

    def _record(
        self,
        b: BundleInfo,
        pid: int,
        started: int,
        build_id: str,
        result: object | None,
        save: bool = True,
    ) -> None:
        funcs = getattr(result, "functions", None) if result is not None else None
        names = [str(getattr(fn, "name", fn)) for fn in funcs] if funcs else list(b.functions)
        self.state.record(
            pid,
            started,
            procs.exe_link(pid),
            build_id,
            AppliedPatch(b.id, b.name, b.path, names, time.time()),
        )
        self._update_gauges()  # gauges first: /status and /metrics then never disagree for long
        if save:
            self.state.save()
            if self.calls is not None and funcs:
                self.calls.watch(pid, b.id, funcs)
        self._update_gauges()

    def _update_gauges(self) -> None:
        n, f = self.state.counts()
        for b in self.bundles:  # a bundle applied nowhere still shows as 0 processes
            n.setdefault(b.id, 0)
            f.setdefault(b.id, len(b.functions))
        metrics.set_patch_state(n, f)

    # ---- introspection ---------------------------------------------------------------------

    def status(self) -> dict:
        """What /status shows: bundles, patched processes, pending failures."""
        return {
            "patch_dir": self.patch_dir,
            "bundles": [
                {
                    "id": b.id,
                    "name": b.name,
                    "build_id": b.build_id,
                    "path": b.path,
                    "functions": list(b.functions),
                }
                for b in self.bundles
            ],
            "processes": self.state.snapshot(),
            "failures": [
                {
                    "pid": k[0],
                    "bundle_id": k[2],
                    "count": v.count,
                    "outcome": v.outcome,
                    "message": v.message,
                    "given_up": v.given_up,
                }
                for k, v in self.failures.items()
            ],
            "exec_watch": self.watch is not None,
            "exec_watch_loading": self._watch_thread is not None and self._watch_thread.is_alive(),
            "exec_watch_error": self.watch_failed,
            "count_calls": self.calls is not None,
            "last_scan": self.last_scan,
        }

    def health(self) -> dict:
        """Healthy while the loop has scanned within two intervals."""
        age = time.time() - (self.last_scan or self.started_at)
        return {
            "ok": age < 2 * self.rescan_interval + 30,
            "last_scan_age_seconds": age,
            "exec_watch": self.watch is not None,
            "bundles": len(self.bundles),
        }


def serve(
    listen: str = "127.0.0.1:9464",
    patch_dir: str = "/etc/opus-bpf/patches",
    state_dir: str = "/var/lib/opus-bpf",
    timeout: float = 10.0,
    rescan_interval: float = 60.0,
    exec_delay: float = 0.2,
    exec_watch: bool = True,
    count_calls: bool = False,
) -> int:
    """Run the agent until SIGTERM/SIGINT; SIGHUP rescans. Returns an exit status."""
    # The runtime keeps patch objects under $OPUS_BPF_STATE_DIR/objects: same place as our record.
    os.environ.setdefault("OPUS_BPF_STATE_DIR", state_dir)
    agent = Agent(
        patch_dir,
        state_dir,
        timeout=timeout,
        rescan_interval=rescan_interval,
        exec_delay=exec_delay,
        exec_watch=exec_watch,
        count_calls=count_calls,
    )
    agent.start(listen)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    signal.signal(signal.SIGHUP, lambda *_: agent.request_scan())
    _notify_ready()
    try:
        agent.run()
    finally:
        agent.close()
    return 0


def _notify_ready() -> None:
    """Tell systemd (Type=notify) that /metrics is up, without depending on python-systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    import socket  # noqa: PLC0415

    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(b"READY=1")
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
