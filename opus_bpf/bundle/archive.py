"""Write and read the single-file bundle (a zip holding manifest.json and patch.so)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError
from .manifest import Manifest, PatchObject, bundle_id

MANIFEST_MEMBER = "manifest.json"
SO_MEMBER = "patch.so"


@dataclass
class Bundle:
    manifest: Manifest
    so_bytes: bytes


def write_bundle(path: str | os.PathLike[str], manifest: Manifest, so_bytes: bytes) -> Manifest:
    """Fill patch_object and id from *so_bytes*, write atomically, return the manifest."""
    manifest.patch_object = PatchObject(hashlib.sha256(so_bytes).hexdigest(), len(so_bytes))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        manifest.id = manifest.compute_id(so_bytes)
        text = manifest.to_json()
    except (TypeError, ValueError) as e:
        raise BundleError(f"manifest for {path} is not JSON-serialisable ({e}); pass plain "
                          f"dicts/lists as analysis") from e
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST_MEMBER, text)
            zf.writestr(SO_MEMBER, so_bytes)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"cannot write bundle {path}: {e.strerror or e}; check that the "
                          f"directory exists and is writable") from e
    return manifest


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify a bundle; every failure is a one-line BundleError."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as e:
        raise BundleError(f"{path}: no such bundle; check the path") from e
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BundleError(f"{path}: not an opus-bpf bundle (not a zip archive or truncated); "
                          f"copy it again or rebuild it with `opus-bpf build`") from e
    with zf:
        names = set(zf.namelist())
        for member in (MANIFEST_MEMBER, SO_MEMBER):
            if member not in names:
                raise BundleError(f"{path}: bundle has no {member}; "
                                  f"rebuild it with `opus-bpf build`")
        try:
            raw = zf.read(MANIFEST_MEMBER)
            so_bytes = zf.read(SO_MEMBER)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise BundleError(f"{path}: bundle is corrupt ({e}); copy it again or rebuild it"
                              ) from e
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: malformed manifest.json ({e}); rebuild the bundle") from e
    try:
        manifest = Manifest.from_dict(data)
    except BundleError as e:
        raise BundleError(f"{path}: {e.message}") from e
    digest = hashlib.sha256(so_bytes).hexdigest()
    if digest != manifest.patch_object.sha256 or len(so_bytes) != manifest.patch_object.size:
        raise BundleError(f"{path}: patch.so does not match the manifest's sha256 (tampered or "
                          f"corrupted); do not apply it, rebuild it with `opus-bpf build`")
    if manifest.id != bundle_id(data, so_bytes):
        raise BundleError(f"{path}: bundle id {manifest.id} does not match its contents "
                          f"(manifest edited after build); rebuild it with `opus-bpf build`")
    return Bundle(manifest, so_bytes)
