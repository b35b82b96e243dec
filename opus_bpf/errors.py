"""Errors an operator sees: each carries one line saying what is wrong and what to do."""

from __future__ import annotations


class OpusError(Exception):
    """Base of every error opus-bpf reports to a user; `message` is the one line printed."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermissionProblem(OpusError):
    """Not root / missing CAP_SYS_PTRACE or CAP_BPF."""

    exit_code = 77


class NoSuchProcess(OpusError):
    """The pid does not exist (or exited before we could look at it)."""


class ProcessExited(OpusError):
    """The target exited while we were working on it."""


class TargetMismatch(OpusError):
    """The process does not run the binary the bundle was built for (build-id differs)."""


class SymbolProblem(OpusError):
    """A function or variable cannot be found, is inlined, or is too short to redirect."""


class DebugInfoMissing(OpusError):
    """The binary is stripped and no separate debug file was found."""


class BundleError(OpusError):
    """The bundle is corrupt, truncated, tampered with or of an unknown format."""


class AlreadyApplied(OpusError):
    """The same patch is already active in the process."""


class NotApplied(OpusError):
    """A revert names a patch that is not active, or not the topmost one."""


class QuiescenceTimeout(OpusError):
    """The functions to replace stayed busy until --timeout; nothing was changed."""

    exit_code = 3


class InjectionError(OpusError):
    """A remote syscall or the loader failed inside the target; the target was left untouched."""
