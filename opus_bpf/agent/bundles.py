"""The bundles in the patch directory, as much of them as the agent needs to route them.

Why not the bundle module: the agent only needs the id, the target build-id and the function
names to decide *which process* gets *which bundle*; verifying and loading the bundle stays the
runtime's job (apply_bundle verifies checksums and refuses a bad bundle). If opus_bpf.bundle
grows a manifest reader, `read_bundle` should call it instead of parsing here.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field

log = logging.getLogger("opus_bpf.agent")

BUNDLE_SUFFIXES = (".opus", ".bundle", ".zip")


@dataclass(frozen=True)
class BundleInfo:
    """What routing needs: where the bundle is, what it is called, which build it patches."""

    path: str
    id: str
    name: str
    build_id: str
    functions: tuple[str, ...] = field(default=())
    mtime_ns: int = 0


def _first(d: dict, *keys: str) -> object:
    for k in keys:
        cur: object = d
        for part in k.split("."):
            if not isinstance(cur, dict) or part not in cur:
                cur = None
                break
            cur = cur[part]
        if cur not in (None, ""):
            return cur
    return None


def read_bundle(path: str) -> BundleInfo:
    """Read manifest.json from a bundle archive; ValueError says what is missing."""
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a bundle ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: manifest.json is not an object")
    build_id = _first(manifest, "target.build_id", "target_build_id", "build_id")
    if not isinstance(build_id, str):
        raise ValueError(f"{path}: manifest names no target build-id")
    base = os.path.basename(path).rsplit(".", 1)[0]
    bid = _first(manifest, "id", "bundle_id", "patch_id")
    name = _first(manifest, "name", "patch_name")
    funcs_raw = _first(manifest, "functions", "changed_functions") or []
    funcs: list[str] = []
    if isinstance(funcs_raw, list):
        for f in funcs_raw:
            n = f.get("name") if isinstance(f, dict) else f
            if isinstance(n, str):
                funcs.append(n)
    return BundleInfo(
        path=os.path.abspath(path),
        id=str(bid) if bid else base,
        name=str(name) if name else base,
        build_id=build_id.lower(),
        functions=tuple(funcs),
        mtime_ns=os.stat(path).st_mtime_ns,
    )


def scan_patch_dir(patch_dir: str) -> tuple[list[BundleInfo], list[tuple[str, str]]]:
    """Every bundle in `patch_dir`, sorted by file name (the order they stack in a process).

    Returns (bundles, problems) where problems are (path, why) for files that are not bundles.
    """
    bundles: list[BundleInfo] = []
    problems: list[tuple[str, str]] = []
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
        except ValueError as exc:
            problems.append((p, str(exc)))
    return bundles, problems
