"""Keep only the parts of a Debian patch that reach the package's binaries.

Security patches carry their regression tests (tests/unit/*.tcl, test/regress_*.c) and docs.
Those files are not compiled in a nocheck package build, so they are in no installed binary:
a test .c without a compile command cannot be preprocessed for the analysis, and a test file
whose context moved in an earlier update makes the whole patch "not apply". The filtered patch
keeps every file section for a C source the build compiled and every header; the rest is
dropped and named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HEADER_SUFFIXES = (".h", ".hh", ".hpp", ".inc", ".def")


def split_sections(text: str) -> list[tuple[str, str]]:
    """(path after -p1, section text) per file of a unified diff; text before the first file
    (the patch description) is returned with path ''."""
    lines = text.splitlines(keepends=True)
    git = any(ln.startswith("diff ") for ln in lines)

    def starts(i: int) -> bool:
        if git:
            return lines[i].startswith("diff ")
        return lines[i].startswith("--- ") and i + 1 < len(lines) and \
            lines[i + 1].startswith("+++ ")

    sections: list[list] = [["", []]]
    for i, line in enumerate(lines):
        if starts(i):
            sections.append(["", []])
        if line.startswith("+++ ") and not sections[-1][0]:
            name = line[4:].split("\t")[0].strip()
            if name == "/dev/null" and i > 0 and lines[i - 1].startswith("--- "):
                name = lines[i - 1][4:].split("\t")[0].strip()
            parts = Path(name).parts
            sections[-1][0] = "/".join(parts[1:]) if len(parts) > 1 else name
        sections[-1][1].append(line)
    return [(p, "".join(ls)) for p, ls in sections if ls]


def compiled_files(compile_commands: Path, tree: Path) -> set[str]:
    """Source files (relative to *tree*) the captured build compiled."""
    out = set()
    for e in json.loads(compile_commands.read_text()):
        f = Path(e["file"]) if os.path.isabs(e["file"]) else Path(e["directory"]) / e["file"]
        try:
            out.add(os.path.relpath(os.path.normpath(f), tree))
        except ValueError:
            continue
    return out


def filter_patch(patch: Path, compiled: set[str], out: Path) -> tuple[Path, list[str]]:
    """Write *patch* without the files no binary is built from; return (file, dropped paths).
    The original file is returned when nothing is dropped."""
    kept, dropped = [], []
    for path, text in split_sections(patch.read_text(errors="surrogateescape")):
        if not path or path in compiled or path.endswith(HEADER_SUFFIXES):
            kept.append(text)
        else:
            dropped.append(path)
    if not dropped:
        return patch, []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(kept), errors="surrogateescape")
    return out, dropped
