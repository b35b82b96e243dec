"""The OPUS gate in front of the build: analyse the diff first, build only what may be applied.

`unsupported` is always refused; `review` is refused unless the operator accepts the findings
(`--accept-review`). The report travels in the bundle's manifest, so whoever applies a bundle
can see what was judged and why.
"""

from __future__ import annotations

import os
from typing import Any

from opus_bpf.analysis import Report, Verdict, analyze_tree
from opus_bpf.errors import OpusError
from opus_bpf.patchbuild.build import BuildResult, build_bundle


class AnalysisRefused(OpusError):
    """The safety analysis says the patch must not be applied at runtime (as built)."""

    exit_code = 4


def _first_reason(report: Report, verdict: Verdict) -> str:
    for fn in report.functions:
        if fn.verdict == verdict:
            findings = getattr(fn, "findings", []) or []
            if findings:
                f = findings[0]
                where = f"{getattr(f, 'file', '?')}:{getattr(f, 'line', '?')}"
                return f"{fn.name}: {getattr(f, 'message', str(f))} ({where})"
            reason = getattr(fn, "reason", "") or ""
            return f"{fn.name}: {reason}".rstrip(": ")
    return ""


def build_checked(
    src_dir: str | os.PathLike[str],
    patch_file: str | os.PathLike[str],
    binary: str | os.PathLike[str],
    output: str | os.PathLike[str],
    cflags: list[str] | str | None = None,
    compile_commands: str | os.PathLike[str] | None = None,
    accept_review: bool = False,
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
    return build_bundle(
        src_dir,
        patch_file,
        binary,
        output,
        cflags=cflags,
        compile_commands=compile_commands,
        analysis=summary,
    ), report
