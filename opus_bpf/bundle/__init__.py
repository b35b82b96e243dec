"""The on-disk bundle: versioned manifest + patch shared object + sha256. See
docs/bundle-format.md."""

from .archive import MANIFEST_MEMBER, SO_MEMBER, Bundle, read_bundle, write_bundle
from .errors import BundleError
from .manifest import (
    FORMAT,
    VERSION,
    AddedFunction,
    Binding,
    BuildInfo,
    Manifest,
    PatchObject,
    ReplacedFunction,
    Target,
    bundle_id,
)

__all__ = [
    "FORMAT",
    "MANIFEST_MEMBER",
    "SO_MEMBER",
    "VERSION",
    "AddedFunction",
    "Binding",
    "Bundle",
    "BundleError",
    "BuildInfo",
    "Manifest",
    "PatchObject",
    "ReplacedFunction",
    "Target",
    "bundle_id",
    "read_bundle",
    "write_bundle",
]
