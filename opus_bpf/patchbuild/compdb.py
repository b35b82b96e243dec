"""Per-file compiler flags: from --cflags, or from a compile_commands.json entry."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError


@dataclass
class CompileCommand:
    """How the build compiled one file: the directory, the file argument as written (so
    ``__FILE__`` and STT_FILE match) and the remaining arguments."""

    directory: Path
    file_arg: str
    args: list[str]  # without the compiler, -c, -o and the file itself
    compiler: str = "gcc"


_WRAPPERS = {"ccache", "distcc", "sccache", "icecc", "buildcache"}


def _split_entry(entry: dict) -> tuple[str, list[str]]:
    """(compiler, arguments); compiler launchers such as ccache are skipped."""
    argv = list(entry["arguments"]) if "arguments" in entry else shlex.split(entry["command"])
    while len(argv) > 1 and os.path.basename(argv[0]) in _WRAPPERS:
        argv = argv[1:]
    return argv[0], argv[1:]


def _strip_io(args: list[str], file_arg: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "-MF", "-MT", "-MQ"):
            i += 2
            continue
        if a == "-c" or a == file_arg or a.startswith("-M"):
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def load_compdb(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"cannot read compile commands {path}: {e}; generate it with "
                         f"`bear -- make` or CMake's -DCMAKE_EXPORT_COMPILE_COMMANDS=ON") from e
    if not isinstance(data, list):
        raise BuildError(f"{path} is not a compile_commands.json (expected a JSON list)")
    return data


def find_command(entries: list[dict], source: Path) -> CompileCommand | None:
    """The entry compiling *source* (an absolute path in the original tree)."""
    want = source.resolve()
    for e in entries:
        try:
            d = Path(e["directory"])
            f = e["file"]
        except (KeyError, TypeError):
            continue
        if (d / f).resolve() != want:
            continue
        cc, args = _split_entry(e)
        file_arg = f if f in args else next((a for a in args if (d / a).resolve() == want), f)
        return CompileCommand(d, file_arg, _strip_io(args, file_arg), cc)
    return None


def parse_cflags(cflags: str | list[str] | None) -> list[str]:
    if cflags is None:
        return []
    return shlex.split(cflags) if isinstance(cflags, str) else list(cflags)
