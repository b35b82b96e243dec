"""Every Prometheus family of opus-bpf, in one registry.

Why one module: the runtime, the CLI and the agent report through the same families, so a
dashboard or alert written against them works whichever of the three produced the samples.
This module imports nothing of ours; callers hand it plain values (str, float, int, lists).

Naming follows Prometheus: ``opus_bpf_<what>_<unit>``, base units (seconds), counters end in
``_total``; ``_created`` series are disabled. Every label takes values from a fixed small set
or from the patch ids in the patch directory, so series stay bounded: a pid is never a label.

Probe overhead is an estimate, not a measurement: each function entry seen by the quiescence
uprobe costs about 0.3 µs and each return seen by the uretprobe about 0.5 µs (each is a trap,
measured on this machine kind, see docs/observability.md). ``PROBE_COST_SECONDS`` holds both.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

prometheus_client.disable_created_metrics()

R = TypeVar("R")

#: Seconds of one uprobe hit (entry) and one uretprobe hit (return) on x86-64, kernel 6.x, quiet
#: machine. A probed first instruction that the kernel cannot emulate (anything but push, jmp,
#: call, ret, nop) is single-stepped out of line and costs far more; see docs/observability.md.
#: Override per host with OPUS_BPF_UPROBE_COST_SECONDS / OPUS_BPF_URETPROBE_COST_SECONDS.
PROBE_COST_SECONDS: dict[str, float] = {
    "uprobe": float(os.environ.get("OPUS_BPF_UPROBE_COST_SECONDS", "0.3e-6")),
    "uretprobe": float(os.environ.get("OPUS_BPF_URETPROBE_COST_SECONDS", "0.5e-6")),
}

#: Buckets from 10 µs to 10 s: a per-thread pause is tens of µs, a stop-the-world pause of a
#: busy 64-thread process is tens of ms, and a quiescence wait is bounded by the 10 s timeout.
DURATION_BUCKETS: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0,
)

#: How many stop-the-world verification attempts one operation needed.
ATTEMPT_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 8, 13, 21, 34)

OPERATIONS: tuple[str, ...] = ("apply", "revert")
#: Fixed outcome set; anything else is reported as ``error`` so the label stays bounded.
OUTCOMES: tuple[str, ...] = ("applied", "reverted", "timeout", "refused", "error")
#: Fixed bundle verification failure reasons; anything else becomes ``other``.
VERIFICATION_REASONS: tuple[str, ...] = (
    "checksum", "signature", "manifest", "version", "build_id", "format", "other",
)
#: What the agent can do about a process it found: bounded label of opus_bpf_agent_*.
AGENT_EVENTS: tuple[str, ...] = ("scan", "exec")

REGISTRY = CollectorRegistry(auto_describe=True)

QUIESCENCE_WAIT = Histogram(
    "opus_bpf_quiescence_wait_seconds",
    "Time from the start of an apply/revert until every thread was out of the functions to "
    "replace (the target keeps running during this wait), or until the timeout.",
    ["operation"], buckets=DURATION_BUCKETS, registry=REGISTRY,
)
PAUSE = Histogram(
    "opus_bpf_pause_seconds",
    "Each stop-the-world pause of the target (threads held by ptrace), failed verification "
    "attempts included.",
    ["operation"], buckets=DURATION_BUCKETS, registry=REGISTRY,
)
SUCCESSFUL_PAUSE = Histogram(
    "opus_bpf_successful_pause_seconds",
    "The pause during which the entry jumps were written or restored (one per successful "
    "operation).",
    ["operation"], buckets=DURATION_BUCKETS, registry=REGISTRY,
)
THREAD_HOLD = Histogram(
    "opus_bpf_thread_hold_seconds",
    "How long a thread was held by an apply/revert. mode=per-thread: each time one thread was "
    "held alone (a look, a single-step, a remote system call) while the rest ran; "
    "mode=consistent: the pauses, during which every thread was held at once.",
    ["operation", "mode"], buckets=DURATION_BUCKETS, registry=REGISTRY,
)
ATTEMPTS = Histogram(
    "opus_bpf_quiescence_attempts",
    "Stop-the-world verification attempts one operation needed.",
    ["operation"], buckets=ATTEMPT_BUCKETS, registry=REGISTRY,
)
OPERATIONS_TOTAL = Counter(
    "opus_bpf_operations_total",
    "Apply and revert operations by outcome: applied, reverted, timeout (never quiescent), "
    "refused (the bundle or process does not fit), error.",
    ["operation", "outcome"], registry=REGISTRY,
)
FUNCTIONS_REPLACED = Counter(
    "opus_bpf_functions_replaced_total",
    "Function entries redirected (apply) or restored (revert) by successful operations.",
    ["operation"], registry=REGISTRY,
)
PROBE_HITS = Counter(
    "opus_bpf_quiescence_probe_hits_total",
    "Quiescence probe hits in the target while waiting (uprobe entries plus uretprobe "
    "returns): each hit is a trap the target paid for.",
    ["operation"], registry=REGISTRY,
)
PROBE_OVERHEAD = Counter(
    "opus_bpf_probe_overhead_seconds_total",
    "Estimated CPU time the target spent in quiescence probes: hits x per-hit cost "
    "(uprobe 0.3 us, uretprobe 0.5 us).",
    ["operation"], registry=REGISTRY,
)
VERIFICATION_FAILURES = Counter(
    "opus_bpf_bundle_verification_failures_total",
    "Bundles refused before touching any process: bad checksum, signature, manifest, "
    "format version, build-id mismatch.",
    ["reason"], registry=REGISTRY,
)
PATCHED_PROCESSES = Gauge(
    "opus_bpf_patched_processes",
    "Running processes that have this patch applied (as recorded by this agent or CLI run).",
    ["patch_id"], registry=REGISTRY,
)
PATCH_FUNCTIONS = Gauge(
    "opus_bpf_patch_functions",
    "Functions this patch replaces (per process it is applied to).",
    ["patch_id"], registry=REGISTRY,
)
REPLACED_FUNCTIONS = Gauge(
    "opus_bpf_replaced_functions",
    "Function entries currently redirected on this host: sum over patches of functions x "
    "patched processes.",
    registry=REGISTRY,
)
PATCHED_CALLS = Counter(
    "opus_bpf_patched_function_calls_total",
    "Calls that reached the new code of a patched function (counted by a BPF uprobe on the new "
    "entry, only while call counting is switched on).",
    ["patch_id", "function"], registry=REGISTRY,
)
AGENT_PROCESSES_SEEN = Counter(
    "opus_bpf_agent_processes_examined_total",
    "Processes whose executable the agent examined, by how it found them (scan of /proc or exec "
    "event).",
    ["source"], registry=REGISTRY,
)
AGENT_EXEC_WATCH = Gauge(
    "opus_bpf_agent_exec_watch_up",
    "1 while the agent's BPF exec watch (sched:sched_process_exec) is attached, else 0: at 0, "
    "restarted processes are only patched at the next periodic scan.",
    registry=REGISTRY,
)
AGENT_PATCH_BUNDLES = Gauge(
    "opus_bpf_agent_bundles",
    "Bundles the agent loaded from its patch directory.",
    registry=REGISTRY,
)
AGENT_LAST_SCAN = Gauge(
    "opus_bpf_agent_last_scan_timestamp_seconds",
    "Unix time the agent last finished a scan of /proc.",
    registry=REGISTRY,
)
BUILD = Info(
    "opus_bpf_build", "Version of opus-bpf that exports these metrics.", registry=REGISTRY,
)



def _preinitialize() -> None:
    """Create every bounded series at zero, so rate() and increase() see the first event."""
    for op in OPERATIONS:
        for oc in OUTCOMES:
            OPERATIONS_TOTAL.labels(op, oc)
        for fam in (QUIESCENCE_WAIT, PROBE_HITS, PAUSE, SUCCESSFUL_PAUSE, ATTEMPTS,
                    FUNCTIONS_REPLACED, PROBE_OVERHEAD):
            fam.labels(op)
    for reason in VERIFICATION_REASONS:
        VERIFICATION_FAILURES.labels(reason)
    for src in AGENT_EVENTS:
        AGENT_PROCESSES_SEEN.labels(src)
    try:
        version = importlib.metadata.version("opus-bpf")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    BUILD.info({"version": version})


_lock = threading.Lock()
_gauge_ids: set[str] = set()


def _operation(operation: str) -> str:
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}, not {operation!r}")
    return operation


def normalize_outcome(outcome: str) -> str:
    """Map an outcome onto the fixed set, so a new runtime outcome cannot add series."""
    return outcome if outcome in OUTCOMES else "error"


def probe_overhead_seconds(probe_hits: int, entries: int | None = None,
                           returns: int | None = None) -> float:
    """Estimated target CPU time spent in probes.

    ``probe_hits`` is entries + returns (what the runtime counts). Without the split, half are
    taken as entries and half as returns (every call that entered while probed also returns).
    """
    if entries is None or returns is None:
        entries = probe_hits / 2
        returns = probe_hits - entries
    return entries * PROBE_COST_SECONDS["uprobe"] + returns * PROBE_COST_SECONDS["uretprobe"]


def observe_apply(
    outcome: str,
    wait_seconds: float,
    pause_seconds: Iterable[float],
    attempts: int,
    probe_hits: int,
    functions: int,
    patch_id: str,
    operation: str = "apply",
    successful_pause_seconds: float | None = None,
    probe_entries: int | None = None,
    probe_returns: int | None = None,
    mode: str = "consistent",
    holds: Iterable[float] | None = None,
) -> None:
    """Record one apply or revert, whatever its outcome.

    ``holds`` (per-thread mode) is every time one thread was held alone; in the consistent
    mode each pause holds every thread, so the pauses are the holds.

    ``pause_seconds`` is every stop-the-world pause (failed verification attempts too);
    ``successful_pause_seconds`` the one that wrote the jumps, if any. ``probe_hits`` counts
    uprobe entries plus uretprobe returns; ``probe_entries``/``probe_returns`` give the split if
    known (it only refines the overhead estimate). ``patch_id`` is
    accepted so callers need not change when per-patch series are added; it is not a label here
    (the gauges carry the per-patch view).
    """
    del patch_id
    op = _operation(operation)
    oc = normalize_outcome(outcome)
    OPERATIONS_TOTAL.labels(op, oc).inc()
    QUIESCENCE_WAIT.labels(op).observe(max(0.0, float(wait_seconds)))
    pauses = list(pause_seconds)
    for p in pauses:
        PAUSE.labels(op).observe(max(0.0, float(p)))
    mode = "per-thread" if mode == "per-thread" else "consistent"
    for h in pauses if holds is None else holds:
        THREAD_HOLD.labels(op, mode).observe(max(0.0, float(h)))
    if successful_pause_seconds is not None and oc in ("applied", "reverted"):
        SUCCESSFUL_PAUSE.labels(op).observe(max(0.0, float(successful_pause_seconds)))
    if attempts > 0:
        ATTEMPTS.labels(op).observe(attempts)
    if probe_hits > 0:
        PROBE_HITS.labels(op).inc(probe_hits)
        PROBE_OVERHEAD.labels(op).inc(
            probe_overhead_seconds(probe_hits, probe_entries, probe_returns))
    if oc in ("applied", "reverted") and functions > 0:
        FUNCTIONS_REPLACED.labels(op).inc(functions)


def observe_result(result: object, operation: str | None = None) -> None:
    """Record an ApplyResult-shaped object (duck-typed, so this module imports nothing of ours).

    Reads ``operation, outcome, wait_seconds, pause_seconds, pauses, attempts, probe_hits,
    functions, bundle_id`` and optionally ``probe_entries, probe_returns``; ``operation``
    overrides the result's own.
    """
    operation = operation or str(getattr(result, "operation", "apply"))
    pauses = getattr(result, "pauses", None)
    successful = getattr(result, "pause_seconds", None)
    if pauses is None:
        pauses = [successful] if successful is not None else []
    functions = getattr(result, "functions", ()) or ()
    mode = "per-thread" if getattr(result, "mode", None) == "per-thread" else "consistent"
    observe_apply(
        outcome=str(getattr(result, "outcome", "error")),
        wait_seconds=float(getattr(result, "wait_seconds", 0.0) or 0.0),
        pause_seconds=list(pauses),
        attempts=int(getattr(result, "attempts", 0) or 0),
        probe_hits=int(getattr(result, "probe_hits", 0) or 0),
        functions=len(functions) if not isinstance(functions, int) else functions,
        patch_id=str(getattr(result, "bundle_id", "")),
        operation=operation,
        successful_pause_seconds=float(successful) if successful is not None else None,
        probe_entries=getattr(result, "probe_entries", None),
        probe_returns=getattr(result, "probe_returns", None),
        mode=mode,
        holds=getattr(result, "holds", None) if mode == "per-thread" else None,
    )


def observe_failure(operation: str, outcome: str, wait_seconds: float = 0.0,
                    pause_seconds: Iterable[float] = (), attempts: int = 0,
                    probe_hits: int = 0) -> None:
    """Record an operation that raised before returning a result (e.g. QuiescenceTimeout)."""
    observe_apply(outcome, wait_seconds, pause_seconds, attempts, probe_hits, 0, "", operation)


def operation_count(operation: str) -> float:
    """Operations of this kind recorded so far in this process, all outcomes.

    Lets a caller record an operation only if the layer below did not already (compare before
    and after), so CLI, agent and runtime can never count one operation twice.
    """
    op = _operation(operation)
    return sum(REGISTRY.get_sample_value("opus_bpf_operations_total",
                                         {"operation": op, "outcome": oc}) or 0.0
               for oc in OUTCOMES)


#: Exception class names (matched along the MRO, so this module needs no import of ours) that
#: mean the operation was refused rather than failed; QuiescenceTimeout means ``timeout``.
REFUSED_ERRORS: frozenset[str] = frozenset({
    "TargetMismatch", "BundleError", "SymbolProblem", "DebugInfoMissing", "AlreadyApplied",
    "NotApplied",
})


#: Raised before anything was attempted (the pid was not there): not counted as an operation, so
#: a short-lived process that exits before the agent reaches it does not look like a failure.
NOT_AN_OPERATION: frozenset[str] = frozenset({"NoSuchProcess"})


def outcome_of(exc: BaseException) -> str:
    """The outcome label for an exception raised by apply_bundle / revert_bundle."""
    names = {c.__name__ for c in type(exc).__mro__}
    if "QuiescenceTimeout" in names:
        return "timeout"
    if names & REFUSED_ERRORS:
        return "refused"
    return "error"


def verification_reason(message: str) -> str:
    """Map a bundle error message onto the bounded ``reason`` label."""
    m = message.lower()
    if "sha256" in m or "does not match its contents" in m or "checksum" in m:
        return "checksum"
    if "signature" in m:
        return "signature"
    if "unsupported bundle version" in m:
        return "version"
    if "malformed manifest" in m:
        return "manifest"
    if "build-id" in m:
        return "build_id"
    if any(k in m for k in ("not an opus-bpf bundle", "unknown bundle format", "has no ",
                            "corrupt", "no such bundle")):
        return "format"
    return "other"


def run_observed(operation: str, fn: Callable[[], R]) -> R:
    """Run one apply/revert and record it, unless the layer below already recorded it.

    On success the result is recorded with ``observe_result``; on an exception (except
    ``NOT_AN_OPERATION``), the
    exception's ``result`` attribute (figures up to the failure) if it has one, else just the
    outcome; a ``BundleError`` also counts a verification failure. The exception is re-raised.
    Comparing ``operation_count`` before and after makes double counting impossible whichever
    layer (runtime, CLI, agent) ends up recording.
    """
    before = operation_count(operation)
    try:
        result = fn()
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if operation_count(operation) == before and not names & NOT_AN_OPERATION:
            partial = getattr(exc, "result", None)
            outcome = outcome_of(exc)
            if partial is not None:
                with contextlib.suppress(Exception):
                    partial.outcome = outcome  # type: ignore[attr-defined]
                observe_result(partial, operation)
            else:
                observe_failure(operation, outcome)
            if "BundleError" in names:
                bundle_verification_failed(
                    verification_reason(str(getattr(exc, "message", exc))))
        raise
    if operation_count(operation) == before:
        observe_result(result, operation)
    return result


def bundle_verification_failed(reason: str) -> None:
    """Count a bundle refused before it touched a process; unknown reasons become ``other``."""
    VERIFICATION_FAILURES.labels(reason if reason in VERIFICATION_REASONS else "other").inc()


def set_patch_state(patched_processes: Mapping[str, int],
                    patch_functions: Mapping[str, int]) -> None:
    """Replace the per-patch gauges with the current picture.

    Patch ids absent from both maps lose their series, so a patch removed from the patch
    directory stops being reported instead of freezing at its last value.
    """
    with _lock:
        ids = set(patched_processes) | set(patch_functions)
        for gone in _gauge_ids - ids:
            for g in (PATCHED_PROCESSES, PATCH_FUNCTIONS):
                with contextlib.suppress(KeyError):
                    g.remove(gone)
        total = 0
        for pid_ in sorted(ids):
            n = int(patched_processes.get(pid_, 0))
            f = int(patch_functions.get(pid_, 0))
            PATCHED_PROCESSES.labels(pid_).set(n)
            PATCH_FUNCTIONS.labels(pid_).set(f)
            total += n * f
        REPLACED_FUNCTIONS.set(total)
        _gauge_ids.clear()
        _gauge_ids.update(ids)


def count_patched_calls(patch_id: str, function: str, calls: int) -> None:
    """Add calls that reached a patched function's new code (read from the BPF call counter)."""
    if calls > 0:
        PATCHED_CALLS.labels(patch_id, function).inc(calls)


def agent_examined(source: str, n: int = 1) -> None:
    """Count processes the agent looked at (``scan`` or ``exec``)."""
    if source not in AGENT_EVENTS:
        raise ValueError(f"source must be one of {AGENT_EVENTS}")
    AGENT_PROCESSES_SEEN.labels(source).inc(n)


def set_exec_watch_up(up: bool) -> None:
    """Say whether the BPF exec watch is attached (alerting on 0 catches a silent fallback)."""
    AGENT_EXEC_WATCH.set(1 if up else 0)


def set_agent_bundles(n: int) -> None:
    """Number of bundles the agent loaded from its patch directory."""
    AGENT_PATCH_BUNDLES.set(n)


def scan_finished(timestamp: float) -> None:
    """Record when the agent last finished a /proc scan (staleness alerts use it)."""
    AGENT_LAST_SCAN.set(timestamp)


def set_build_info(version: str) -> None:
    """Export the version as ``opus_bpf_build_info{version=...} 1``."""
    BUILD.info({"version": version})


_preinitialize()


def exposition() -> bytes:
    """The registry in Prometheus text format (for tests and ``--metrics-file``)."""
    return generate_latest(REGISTRY)


def push(gateway: str, job: str = "opus-bpf", grouping_key: Mapping[str, str] | None = None,
         timeout: float = 10.0) -> None:
    """Push the registry to a Pushgateway: for one-shot CLI runs that live shorter than a scrape.

    The grouping key defaults to ``instance=<hostname>`` so two hosts do not overwrite each
    other's group. Uses PUT semantics (``push_to_gateway``): the group is replaced as a whole.
    """
    key = dict(grouping_key) if grouping_key else {"instance": os.uname().nodename}
    prometheus_client.push_to_gateway(gateway, job=job, registry=REGISTRY,
                                      grouping_key=key, timeout=timeout)


def publish(pushgateway: str | None = None, textfile: str | None = None,
            job: str = "opus-bpf") -> list[str]:
    """For one-shot CLI runs: push and/or write the registry; returns problems, never raises.

    A monitoring hiccup must not turn a successful apply into a failed command, so the caller
    prints the returned lines as warnings and keeps its exit status.
    """
    problems: list[str] = []
    if pushgateway:
        try:
            push(pushgateway, job=job)
        except Exception as exc:  # URLError, HTTPError, timeouts
            problems.append(f"could not push metrics to {pushgateway}: {exc}")
    if textfile:
        try:
            write_textfile(textfile)
        except OSError as exc:
            problems.append(f"could not write metrics to {textfile}: {exc}")
    return problems


def write_textfile(path: str) -> None:
    """Write the registry for node_exporter's textfile collector (an alternative to pushing)."""
    prometheus_client.write_to_textfile(path, REGISTRY)


def start_http_server(listen: str) -> tuple[object, object]:
    """Serve /metrics on ``host:port`` (IPv6 as ``[::1]:9464``); returns (server, thread)."""
    host, port = split_listen(listen)
    return prometheus_client.start_http_server(port, addr=host, registry=REGISTRY)


def split_listen(listen: str) -> tuple[str, int]:
    """Parse ``host:port``, ``[v6]:port`` or ``:port`` (all interfaces)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be host:port, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
