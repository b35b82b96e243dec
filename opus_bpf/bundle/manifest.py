"""The bundle manifest: what the runtime needs to apply a patch, as plain dataclasses + JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .errors import BundleError

FORMAT = "opus-bpf-bundle"
VERSION = 1


@dataclass
class Target:
    """The binary the patch was built against; the runtime refuses a process whose build-id
    differs."""

    path: str
    build_id: str
    elf_type: str  # "EXEC" | "DYN"


@dataclass
class PatchObject:
    sha256: str
    size: int


@dataclass
class ReplacedFunction:
    """An old function in the target that gets an entry jump to ``new_symbol`` in patch.so."""

    name: str
    file: str  # basename as in the target's STT_FILE / DWARF CU name
    static: bool
    new_symbol: str
    source_path: str = ""  # relative to --src


@dataclass
class AddedFunction:
    """A function only the patch defines (new, or a copy of a helper the target inlined)."""

    name: str
    file: str
    static: bool
    source_path: str = ""
    reason: str = "new"  # "new" | "copied" (helper without an out-of-line copy in target)


@dataclass
class Binding:
    """A pointer slot in patch.so that the runtime fills with a target address."""

    slot: str
    symbol: str
    kind: str  # "object" | "function"
    binding: str  # "global" | "static" | "local-static"
    file: str
    function: str | None = None  # enclosing function, for local-static
    target_symbol: str = ""  # exact .symtab name the build found ("calls.0"); a hint, verify


@dataclass
class BuildInfo:
    compiler: str
    cflags: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    name: str
    target: Target
    patch_object: PatchObject
    functions: list[ReplacedFunction] = field(default_factory=list)
    added_functions: list[AddedFunction] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    build: BuildInfo = field(default_factory=lambda: BuildInfo(compiler=""))
    analysis: Any = None
    created: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    id: str = ""
    format: str = FORMAT
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a stable key order (format/version/id first)."""
        d = asdict(self)
        head = {k: d.pop(k) for k in ("format", "version", "id", "name", "created")}
        return {**head, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def compute_id(self, so_bytes: bytes) -> str:
        return bundle_id(self.to_dict(), so_bytes)

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Validate and build; any structural problem is a BundleError naming the field."""
        if not isinstance(d, dict):
            raise BundleError("malformed manifest.json: top level is not an object; "
                              "rebuild the bundle with `opus-bpf build`")
        if d.get("format") != FORMAT:
            raise BundleError(f"unknown bundle format {d.get('format')!r} (expected {FORMAT!r}); "
                              f"this file is not an opus-bpf bundle")
        if d.get("version") != VERSION:
            raise BundleError(f"unsupported bundle version {d.get('version')!r} (this opus-bpf "
                              f"reads version {VERSION}); rebuild it with this opus-bpf")
        try:
            return cls(
                format=d["format"], version=d["version"], id=str(d["id"]), name=str(d["name"]),
                created=str(d["created"]),
                target=_make(Target, d["target"]),
                patch_object=_make(PatchObject, d["patch_object"]),
                functions=[_make(ReplacedFunction, f) for f in d["functions"]],
                added_functions=[_make(AddedFunction, f) for f in d.get("added_functions", [])],
                bindings=[_make(Binding, b) for b in d["bindings"]],
                build=_make(BuildInfo, d.get("build") or {"compiler": ""}),
                analysis=d.get("analysis"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"malformed manifest.json: {type(e).__name__}: {e}; "
                              f"rebuild the bundle with `opus-bpf build`") from e


def bundle_id(manifest: dict[str, Any], so_bytes: bytes) -> str:
    """First 12 hex digits of sha256(canonical JSON of the manifest without ``id``, keys
    sorted) + patch.so. Computed on the JSON as written, so keys a reader does not know still
    count."""
    d = {k: v for k, v in manifest.items() if k != "id"}
    h = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())
    h.update(so_bytes)
    return h.hexdigest()[:12]


def _make(cls: type, d: Any) -> Any:
    """Build a dataclass from a JSON object, ignoring keys this version does not know (an
    incompatible change bumps ``version`` instead)."""
    if not isinstance(d, dict):
        raise TypeError(f"{cls.__name__} entry is not an object")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
