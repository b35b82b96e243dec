"""The bundle file: round trip, id, and a one-line refusal for every kind of damage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from opus_bpf.bundle import (
    Binding,
    BundleError,
    Manifest,
    PatchObject,
    ReplacedFunction,
    Target,
    bundle_id,
    read_bundle,
    write_bundle,
)

SO = b"\x7fELF" + bytes(range(256)) * 8


def manifest() -> Manifest:
    return Manifest(
        name="fix", target=Target("/usr/bin/server", "ab" * 20, "DYN"),
        patch_object=PatchObject("", 0),
        functions=[ReplacedFunction("handle", "server.c", False, "handle", "src/server.c")],
        bindings=[Binding("__opus_ref_counter", "counter", "object", "global", "server.c"),
                  Binding("__opus_ref_handle__calls", "calls", "object", "local-static",
                          "server.c", "handle", "calls.0")])


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    p = tmp_path / "fix.opus"
    write_bundle(p, manifest(), SO)
    return p


def rewrite(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def refused(path: Path, *words: str) -> str:
    with pytest.raises(BundleError) as ei:
        read_bundle(path)
    msg = ei.value.message
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_round_trip(bundle: Path) -> None:
    b = read_bundle(bundle)
    assert b.so_bytes == SO
    m = b.manifest
    assert m.to_dict() == manifest().to_dict() | {"id": m.id, "created": m.created,
                                                  "patch_object": m.patch_object.__dict__}
    assert m.patch_object.size == len(SO) and len(m.patch_object.sha256) == 64
    assert len(m.id) == 12 and m.id == m.compute_id(SO)
    raw = json.loads(members(bundle)["manifest.json"])
    assert list(raw)[:5] == ["format", "version", "id", "name", "created"]
    assert raw["format"] == "opus-bpf-bundle" and raw["version"] == 1
    assert raw["created"].endswith("Z")
    assert raw["bindings"][1]["function"] == "handle" and raw["analysis"] is None


def test_id_depends_on_content(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a.opus", manifest(), SO)
    m2 = manifest()
    m2.created = a.created
    b = write_bundle(tmp_path / "b.opus", m2, SO + b"x")
    assert a.id != b.id


def test_tampered_so(bundle: Path) -> None:
    m = members(bundle)
    m["patch.so"] = m["patch.so"][:-1] + b"\x00"
    rewrite(bundle, m)
    refused(bundle, "tampered", "rebuild")


def test_edited_manifest(bundle: Path) -> None:
    m = members(bundle)
    d = json.loads(m["manifest.json"])
    d["functions"][0]["name"] = "other"
    m["manifest.json"] = json.dumps(d).encode()
    rewrite(bundle, m)
    refused(bundle, "does not match its contents")


def test_truncated(bundle: Path) -> None:
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 2])
    refused(bundle, "not a zip archive or truncated")


def test_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "x.opus"
    p.write_text("hello")
    refused(p, "not an opus-bpf bundle")


def test_missing_file(tmp_path: Path) -> None:
    refused(tmp_path / "none.opus", "no such bundle")


@pytest.mark.parametrize("member", ["manifest.json", "patch.so"])
def test_missing_member(bundle: Path, member: str) -> None:
    m = members(bundle)
    del m[member]
    rewrite(bundle, m)
    refused(bundle, f"no {member}")


@pytest.mark.parametrize("change,words", [
    ({"format": "something-else"}, ("unknown bundle format",)),
    ({"version": 2}, ("unsupported bundle version 2",)),
    ({"functions": "handle"}, ("malformed manifest.json",)),
    ({"target": {"path": "/x"}}, ("malformed manifest.json",)),
    ({"bindings": None}, ("malformed manifest.json",)),
])
def test_bad_manifest(bundle: Path, change: dict, words: tuple[str, ...]) -> None:
    m = members(bundle)
    d = json.loads(m["manifest.json"]) | change
    m["manifest.json"] = json.dumps(d).encode()
    rewrite(bundle, m)
    refused(bundle, *words)


def test_manifest_not_json(bundle: Path) -> None:
    m = members(bundle)
    m["manifest.json"] = b"{not json"
    rewrite(bundle, m)
    refused(bundle, "malformed manifest.json")
    m["manifest.json"] = b"[1, 2]"
    rewrite(bundle, m)
    refused(bundle, "top level is not an object")


def test_unknown_keys_are_ignored(bundle: Path) -> None:
    m = members(bundle)
    d = json.loads(m["manifest.json"])
    d["bindings"][0]["future"] = 1
    # the id covers the manifest as written (unknown keys included): recompute it as a newer
    # writer would
    d["id"] = bundle_id(d, SO)
    m["manifest.json"] = json.dumps(d).encode()
    rewrite(bundle, m)
    assert read_bundle(bundle).manifest.bindings[0].slot == "__opus_ref_counter"


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write bundle .*directory exists"):
        write_bundle(tmp_path / "nodir" / "x.opus", manifest(), SO)
    m = manifest()
    m.analysis = {"bad": object()}
    with pytest.raises(BundleError, match="not JSON-serialisable"):
        write_bundle(tmp_path / "x.opus", m, SO)
    assert not list(tmp_path.iterdir())
