"""The names other parts of opus-bpf import from cfront (analysis, patchbuild) stay put."""

from __future__ import annotations

import dataclasses
import inspect

import opus_bpf.cfront as cfront


def test_public_names() -> None:
    for name in ("preprocess", "parse", "TranslationUnit", "FunctionDef", "changed_functions",
                 "ChangeSet", "LocalStatic", "GlobalVar", "CFrontError"):
        assert hasattr(cfront, name), name
        assert name in cfront.__all__


def test_signatures_and_fields() -> None:
    assert list(inspect.signature(cfront.preprocess).parameters)[:3] == ["path", "cflags", "cwd"]
    assert list(inspect.signature(cfront.parse).parameters)[:3] == ["path", "cflags", "cwd"]
    assert list(inspect.signature(cfront.changed_functions).parameters) == ["old_tu", "new_tu"]
    tu_fields = {f.name for f in dataclasses.fields(cfront.TranslationUnit)}
    assert {"ast", "path", "functions", "globals"} <= tu_fields
    fd_fields = {f.name for f in dataclasses.fields(cfront.FunctionDef)}
    assert {"name", "node", "file", "line", "is_static", "is_inline",
            "local_statics"} <= fd_fields
    gv_fields = {f.name for f in dataclasses.fields(cfront.GlobalVar)}
    assert {"name", "storage", "has_initializer", "line"} <= gv_fields
    cs_fields = {f.name for f in dataclasses.fields(cfront.ChangeSet)}
    assert {"modified", "added", "removed"} <= cs_fields
    assert cfront.CFrontError("x").message == "x"
