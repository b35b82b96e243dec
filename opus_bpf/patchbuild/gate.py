"""The OPUS gate in front of the build: analyse the diff first, build only what may be applied.

`unsupported` is always refused; `review` is refused unless the operator accepts the findings
(`--accept-review`). The report travels in the bundle's manifest, so whoever applies a bundle
can see what was judged and why.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from opus_bpf.analysis import Report, Verdict, analyze_tree
from opus_bpf.bundle import read_bundle
from opus_bpf.errors import OpusError
from opus_bpf.patchbuild.build import BuildResult, build_bundle
from opus_bpf.patchbuild.clobbers import built_without_ipa_ra, ipa_ra_risk
from opus_bpf.target.elf import load_elf


class RegisterRisk(OpusError):
    """A new function may clobber registers its callers rely on (gcc -fipa-ra)."""

    exit_code = 4


class AnalysisRefused(OpusError):
    """The safety analysis says the patch must not be applied at runtime (as built)."""

    exit_code = 4


def _first_reason(report: Report, verdict: Verdict) -> str:
    """The first finding behind a verdict, functions or file scope (types, globals, parsing)."""
    return report.first_reason(verdict)


def build_checked(
    src_dir: str | os.PathLike[str],
    patch_file: str | os.PathLike[str],
    binary: str | os.PathLike[str],
    output: str | os.PathLike[str],
    cflags: list[str] | str | None = None,
    compile_commands: str | os.PathLike[str] | None = None,
    accept_review: bool = False,
    ignore_register_risk: bool = False,
) -> tuple[BuildResult, Report]:
    """Run the safety analysis, refuse what it forbids, then build the bundle with its report."""
    report = analyze_tree(src_dir, patch_file, cflags=cflags, compile_commands=compile_commands)
    verdict = Verdict(report.verdict)
    if verdict == Verdict.UNSUPPORTED:
        raise AnalysisRefused(
            "the patch cannot be applied by swapping functions "
            f"({_first_reason(report, verdict)}); "
            "see `opus-bpf analyze` for every finding"
        )
    if verdict == Verdict.REVIEW and not accept_review:
        raise AnalysisRefused(
            f"the safety analysis asks for review ({_first_reason(report, verdict)}); read "
            "`opus-bpf analyze` and rebuild with --accept-review if it is safe"
        )
    summary: dict[str, Any] = report.to_json()
    result = build_bundle(
        src_dir,
        patch_file,
        binary,
        output,
        cflags=cflags,
        compile_commands=compile_commands,
        analysis=summary,
    )
    if not ignore_register_risk:
        try:
            check_register_risk(str(binary), result)
        except RegisterRisk:
            Path(output).unlink(missing_ok=True)
            raise
    return result, report


def check_register_risk(binary: str, result: BuildResult) -> None:
    """Refuse a bundle whose new function writes caller-saved registers the old one never did.

    With gcc's -fipa-ra (on at -O2/-O3/-Os) a caller of a non-interposable function keeps values
    in the caller-saved registers that function (and what it calls) leaves alone; a replacement
    that writes one of them corrupts such a caller. Programs built with -fno-ipa-ra (or at
    -O0/-O1/-Og, read from DWARF's DW_AT_producer) have no such callers.
    """
    if built_without_ipa_ra(binary):
        return
    bundle = read_bundle(result.output)
    target = load_elf(binary)
    library = _is_library(binary)
    with tempfile.NamedTemporaryFile(suffix=".so") as so:
        so.write(bundle.so_bytes)
        so.flush()
        patch = load_elf(so.name)
        for f in bundle.manifest.functions:
            old = target.function(f.name, f.file, f.static)
            if library and old.bind != "LOCAL":
                continue  # reached through the PLT: callers assume the full ABI clobbers
            new = patch.function(f.new_symbol, f.file, f.static)
            risk = ipa_ra_risk(binary, old.value, old.size, so.name, new.value, new.size)
            if risk:
                regs = ", ".join(sorted(risk, key=lambda r: (len(r), r)))
                raise RegisterRisk(
                    f"new {f.name} writes {regs}, which the old one never did, and {binary} was "
                    "built with gcc -fipa-ra: its callers may keep values there across the call; "
                    "rebuild the program with -fno-ipa-ra, or pass --ignore-register-risk once "
                    "you have checked its callers"
                )


def _is_library(path: str) -> bool:
    """A shared library rather than a PIE executable (both are ET_DYN): it has a soname."""
    with open(path, "rb") as fh:
        for sec in ELFFile(fh).iter_sections():
            if isinstance(sec, DynamicSection):
                return any(t.entry.d_tag == "DT_SONAME" for t in sec.iter_tags())
    return False
