"""The bundles in the patch directory, verified once per file version, routed by build-id.

Why verify here and not only in apply_bundle: a bad bundle (corrupt, tampered, wrong format
version) should be refused once, counted once in opus_bpf_bundle_verification_failures_total
and logged, not retried against every matching process at every scan.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from opus_bpf import bundle as bundle_mod
from opus_bpf.metrics import verification_reason

log = logging.getLogger("opus_bpf.agent")

BUNDLE_SUFFIXES = (".opus",)


@dataclass(frozen=True)
class BundleInfo:
    """What routing needs: where the bundle is, what it is called, which build it patches."""

    path: str
    id: str
    name: str
    build_id: str
    functions: tuple[str, ...] = field(default=())
    mtime_ns: int = 0
    target_path: str = ""  # the file the bundle was built for (an executable or a library)


class BundleRefused(ValueError):
    """A bundle failed verification; `reason` is one of metrics.VERIFICATION_REASONS."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def read_bundle(path: str) -> BundleInfo:
    """Read and verify a bundle (checksums, id, format version); BundleRefused if it fails."""
    try:
        b = bundle_mod.read_bundle(path)
    except bundle_mod.BundleError as exc:
        raise BundleRefused(exc.message, verification_reason(exc.message)) from exc
    m = b.manifest
    return BundleInfo(
        path=os.path.abspath(path),
        id=m.id,
        name=m.name,
        build_id=m.target.build_id.lower(),
        functions=tuple(f.name for f in m.functions),
        mtime_ns=os.stat(path).st_mtime_ns,
        target_path=m.target.path,
    )


def scan_patch_dir(patch_dir: str) -> tuple[list[BundleInfo], list[BundleRefused]]:
    """Every *.opus in `patch_dir`, sorted by file name (the order they stack in a process).

    Returns (bundles, refused) where refused carry the path in their message.
    """
    bundles: list[BundleInfo] = []
    refused: list[BundleRefused] = []
    try:
        names = sorted(os.listdir(patch_dir))
    except FileNotFoundError:
        return [], []
    for n in names:
        p = os.path.join(patch_dir, n)
        if not n.endswith(BUNDLE_SUFFIXES) or not os.path.isfile(p):
            continue
        try:
            bundles.append(read_bundle(p))
        except BundleRefused as exc:
            refused.append(exc)
    return bundles, refused
