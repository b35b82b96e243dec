"""The agent's one door into the runtime: apply a bundle to a pid, and classify what happened.

Why one function: every runtime call the agent makes goes through `apply_one` / `status_ids`,
so tests can run the whole agent (exec detection, state, metrics endpoint) with a fake runtime,
and a runtime API change touches only this file.

Metrics: the agent runs each apply through metrics.run_observed, which records it unless the
runtime already did, so wiring metrics into the runtime later can never double-count. On failure
it uses the exception's `result` attribute (figures up to the failure) if the runtime attached
one.

Test-only fake: with OPUS_BPF_AGENT_FAKE_APPLY=<outcome> (applied, timeout, refused, error) in
the agent's environment, no process is touched; each call returns or raises as the runtime would
for that outcome, with synthetic durations. Never set it in production.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from opus_bpf import errors, metrics
from opus_bpf.agent.bundles import BundleInfo

FAKE_ENV = "OPUS_BPF_AGENT_FAKE_APPLY"

# What the agent does next after each kind of failure.
RETRY = "retry"          # try again later with backoff (busy function, transient error)
GIVE_UP = "give_up"      # this bundle cannot go into this process: do not retry
GONE = "gone"            # the process exited: forget it
ALREADY = "already"      # it is already there: record it


@dataclass
class FakeFunction:
    name: str
    old_address: int
    new_address: int


@dataclass
class FakeResult:
    pid: int
    bundle_id: str
    name: str
    functions: list[FakeFunction] = field(default_factory=list)
    wait_seconds: float = 0.0
    pause_seconds: float = 0.0
    pauses: list[float] = field(default_factory=list)
    attempts: int = 1
    probe_hits: int = 0
    outcome: str = "applied"


def classify(exc: BaseException) -> tuple[str, str]:
    """(metrics outcome, agent action) for an exception raised by apply_bundle."""
    outcome = metrics.outcome_of(exc)
    if isinstance(exc, errors.AlreadyApplied):
        return outcome, ALREADY
    if isinstance(exc, errors.NoSuchProcess | errors.ProcessExited):
        return outcome, GONE
    if outcome == "refused":
        return outcome, GIVE_UP
    return outcome, RETRY


def _fake_apply(bundle: BundleInfo, pid: int, outcome: str) -> FakeResult:
    rnd = random.Random(pid)
    pauses = [rnd.uniform(20e-6, 400e-6) for _ in range(rnd.randint(1, 3))]
    funcs = [FakeFunction(n, 0x1000 + i * 16, 0x7F0000000000 + i * 16)
             for i, n in enumerate(bundle.functions or ("fake_function",))]
    res = FakeResult(pid, bundle.id, bundle.name, funcs, rnd.uniform(0.5e-3, 20e-3),
                     pauses[-1], pauses, len(pauses), rnd.randint(10, 5000), outcome)
    if outcome == "applied":
        return res
    res.functions = []
    exc: errors.OpusError
    if outcome == "timeout":
        exc = errors.QuiescenceTimeout(f"fake: {bundle.name} stayed busy in {pid}")
    elif outcome == "refused":
        exc = errors.TargetMismatch(f"fake: {pid} does not run {bundle.build_id}")
    else:
        exc = errors.OpusError(f"fake: {outcome}")
    exc.result = res  # type: ignore[attr-defined] - as the runtime may attach partial figures
    raise exc


def apply_one(bundle: BundleInfo, pid: int, timeout: float) -> object:
    """Apply `bundle` to `pid`; returns an ApplyResult or raises what apply_bundle raises."""
    fake = os.environ.get(FAKE_ENV)
    if fake:
        return _fake_apply(bundle, pid, fake)
    from opus_bpf.runtime.apply import apply_bundle  # noqa: PLC0415 - runtime loads BCC

    return apply_bundle(bundle.path, pid, timeout=timeout)


def process_patches(pid: int) -> list[object] | None:
    """The patches the process itself says are loaded (PatchState-like: id, name, state,
    functions with name/new_address), or None if the runtime cannot say.

    Reading the truth from the process (not only the state file) keeps the agent from stacking a
    patch the CLI already applied by hand, and lets it notice a manual revert.
    """
    if os.environ.get(FAKE_ENV):
        return None
    try:
        from opus_bpf.runtime.status import process_status  # noqa: PLC0415
    except ImportError:
        return None
    try:
        return list(process_status(pid))
    except Exception:  # status is advisory; the apply itself refuses duplicates
        return None
