"""Errors of the distro layer: one line each, saying what is wrong and what to do."""

from __future__ import annotations

from opus_bpf.errors import OpusError


class DistroError(OpusError):
    """A dpkg/apt question could not be answered (file not owned, package unknown, ...)."""


class SourceUnavailable(OpusError):
    """The source package of a version cannot be downloaded (no deb-src entry, 404, ...)."""


class RebuildFailed(OpusError):
    """dpkg-buildpackage (or its build dependencies) failed."""


class RebuildMismatch(OpusError):
    """The rebuilt binary is not the installed one: loaded sections differ."""

    exit_code = 5
