"""Run the C preprocessor the way the TU is really built, so pycparser sees what gcc sees.

Only flags that change preprocessing are kept: include paths, macros, language standard,
forced includes, target/optimisation flags (they set predefined macros such as __OPTIMIZE__
and __x86_64__ that select different code in glibc headers). Everything that produces output
(-c, -o, -M*) or only affects code generation/diagnostics is dropped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import CFrontError

SHIM_HEADER = Path(__file__).with_name("gnu_shim.h")

# flags that take their value as the next argument when written separately ("-I dir")
_KEEP_WITH_ARG = {"-I", "-D", "-U", "-include", "-isystem", "-iquote", "-idirafter",
                  "-imacros", "-isysroot", "--sysroot", "-imultiarch", "-iprefix"}
_DROP_WITH_ARG = {"-o", "-MF", "-MT", "-MQ", "-x", "-L", "-l", "-Xlinker", "-Xassembler",
                  "-Xpreprocessor", "-aux-info", "-dumpdir", "-dumpbase"}
# joined-prefix flags we keep ("-Idir", "-DX=1", "-std=gnu11", "-O2", "-m64", "-f...")
_KEEP_PREFIXES = ("-I", "-D", "-U", "-std=", "-include", "-isystem", "-iquote", "-idirafter",
                  "-imacros", "--sysroot=", "-O", "-m", "-f", "-ansi", "-pthread", "-nostdinc",
                  "-undef", "-trigraphs", "--std=")
# code-generation/instrumentation flags that define no macros a parse needs, or that would
# make gcc -E fail or emit something other than C
_DROP_PREFIXES = ("-fdiagnostics", "-fsanitize", "-fprofile", "-flto", "-fdump",
                  "-fstack-usage", "-fcallgraph-info", "-fdebug-prefix-map",
                  "-ffile-prefix-map", "-fmacro-prefix-map")
_SOURCE_SUFFIXES = (".c", ".i", ".h", ".cc", ".cpp", ".s", ".S", ".o", ".a", ".so")


def filter_cflags(cflags: list[str]) -> list[str]:
    """Keep the flags that influence preprocessing; drop outputs, inputs and diagnostics."""
    out: list[str] = []
    i = 0
    while i < len(cflags):
        flag = cflags[i]
        if flag in _KEEP_WITH_ARG:
            if i + 1 < len(cflags):
                out += [flag, cflags[i + 1]]
            i += 2
            continue
        if flag in _DROP_WITH_ARG:
            i += 2
            continue
        i += 1
        if not flag.startswith("-"):
            continue  # source files, objects
        if flag.startswith(_DROP_PREFIXES) or flag.startswith("-M"):
            continue
        if flag.startswith(_KEEP_PREFIXES):
            out.append(flag)
    return out


def preprocess(path: str | os.PathLike[str], cflags: list[str] | None = None,
               cwd: str | os.PathLike[str] | None = None, *, cc: str = "gcc") -> str:
    """Return ``cc -E`` output for *path* with line markers and the GNU shim force-included.

    *path* is passed to the compiler as given (relative to *cwd*), so line markers and
    coordinates name the file the way the build names it.
    """
    cmd = [cc, "-E", "-include", str(SHIM_HEADER), *filter_cflags(list(cflags or [])),
           "-D__OPUS_BPF_CFRONT__=1", str(path)]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise CFrontError(f"cannot run {cc}: {e}; install gcc or pass a working compiler") from e
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln),
                     proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else "")
        raise CFrontError(f"preprocessing {path} failed: {first.strip()} "
                          f"(check the include paths and -D flags for this file)")
    return proc.stdout
