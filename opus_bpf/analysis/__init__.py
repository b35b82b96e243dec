"""OPUS-style safety analysis of a source patch (issue 3): per changed function, is a body
swap safe, does it need review, or can it not be applied that way at all."""

from .analyze import analyze_patch
from .report import EXIT_CODES, RULES, Finding, FunctionResult, Report, Verdict, exit_code
from .tree import analyze_sources, analyze_tree

__all__ = [
    "EXIT_CODES", "RULES", "Finding", "FunctionResult", "Report", "Verdict", "analyze_patch",
    "analyze_sources", "analyze_tree", "exit_code",
]
