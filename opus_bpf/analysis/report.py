"""Verdicts, findings and the three renderings of a report (text for people, JSON for tools,
SARIF 2.1.0 for code-scanning UIs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """Ordered: the overall verdict is the worst one."""

    SAFE = "safe"
    REVIEW = "review"
    UNSUPPORTED = "unsupported"

    @property
    def rank(self) -> int:
        return {"safe": 0, "review": 1, "unsupported": 2}[self.value]

    @staticmethod
    def worst(vs: list[Verdict]) -> Verdict:
        return max(vs, key=lambda v: v.rank, default=Verdict.SAFE)


EXIT_CODES = {Verdict.SAFE: 0, Verdict.REVIEW: 3, Verdict.UNSUPPORTED: 4}


def exit_code(what: Report | Verdict | str) -> int:
    """Process exit status for `opus-bpf analyze`: safe 0, review 3, unsupported 4.

    Takes a Report (its overall verdict), a Verdict or a verdict name.
    """
    if isinstance(what, Report):
        what = what.verdict
    return EXIT_CODES[Verdict(what)]


# kind -> (verdict, one-line rule description)
RULES: dict[str, tuple[Verdict, str]] = {
    "write-global": (Verdict.REVIEW, "New write to a global variable"),
    "write-static": (Verdict.REVIEW, "New write to a file-static or function-local static"),
    "write-param": (Verdict.REVIEW,
                    "New write to memory reached through a parameter (out-parameter)"),
    "write-heap": (Verdict.REVIEW, "New write to heap memory"),
    "write-pointer": (Verdict.REVIEW,
                      "New write through a pointer of unknown origin (call result, unset)"),
    "changed-write": (Verdict.REVIEW,
                      "Stores a new value into non-local state the old version also wrote"),
    "unknown-call": (Verdict.REVIEW,
                     "New call to a function whose effects cannot be seen"),
    "new-return-value": (Verdict.REVIEW,
                         "Returns a value the old version never returned"),
    "signature-changed": (Verdict.UNSUPPORTED, "Parameter list or linkage changed"),
    "return-type-changed": (Verdict.UNSUPPORTED, "Return type changed"),
    "type-changed": (Verdict.UNSUPPORTED,
                     "struct/union/enum/typedef definition changed and is used by code"),
    "global-changed": (Verdict.UNSUPPORTED, "Global variable added, removed or re-initialised"),
    "static-local-changed": (Verdict.UNSUPPORTED,
                             "Function-local static added or its type/initialiser changed"),
    "macro-changed": (Verdict.UNSUPPORTED,
                      "Function text unchanged but its preprocessed code changed (macro)"),
    "inline-changed": (Verdict.UNSUPPORTED, "Inline function changed (copies live in callers)"),
    "main-function": (Verdict.UNSUPPORTED, "main() is always on the stack"),
    "thread-start-routine": (Verdict.UNSUPPORTED,
                             "Thread start routine is on the stack of a live thread"),
    "never-returns": (Verdict.UNSUPPORTED,
                      "Function never returns, so it is always on some stack"),
    "parse-error": (Verdict.UNSUPPORTED, "A changed file could not be parsed"),
}


@dataclass
class Finding:
    kind: str
    verdict: Verdict
    message: str
    function: str | None = None
    file: str | None = None
    line: int | None = None
    code: str | None = None
    via: str | None = None
    target: str | None = None
    used_by: list[str] | None = None  # type-changed: the functions that use the type

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class FunctionResult:
    name: str
    status: str  # changed | added | removed | preprocessed-only
    verdict: Verdict
    file: str | None = None
    line: int | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "verdict": self.verdict.value,
            "file": self.file, "line": self.line,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class Report:
    functions: list[FunctionResult] = field(default_factory=list)
    global_findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. files skipped, and why

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst(
            [f.verdict for f in self.functions] + [g.verdict for g in self.global_findings]
        )

    @property
    def exit_code(self) -> int:
        return exit_code(self.verdict)

    def function(self, name: str) -> FunctionResult | None:
        return next((f for f in self.functions if f.name == name), None)

    def first_reason(self, verdict: Verdict | str | None = None) -> str:
        """One line for refusal messages: the first finding with the given (default: the
        overall) verdict, file-scope findings (types, globals, parse errors) included."""
        want = Verdict(verdict) if verdict is not None else self.verdict
        for f in self.all_findings():
            if f.verdict is want:
                who = f"{f.function}: " if f.function else ""
                return f"{who}{f.message} ({_where(f)})"
        return ""

    def all_findings(self) -> list[Finding]:
        out = list(self.global_findings)
        for f in self.functions:
            out.extend(f.findings)
        return out

    # ---- renderings ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "files": self.files,
            "functions": [f.to_dict() for f in self.functions],
            "global_findings": [g.to_dict() for g in self.global_findings],
            "notes": self.notes,
        }

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready object (json.dumps it), like to_sarif()."""
        return self.to_dict()

    def to_json_text(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self) -> str:
        lines = [f"verdict: {self.verdict.value.upper()}"]
        if not self.functions and not self.global_findings:
            lines.append("no function changed")
        else:
            counts = {v: sum(1 for f in self.functions if f.verdict is v) for v in Verdict}
            parts = [f"{n} {v.value}" for v, n in counts.items() if n]
            lines.append(f"{len(self.functions)} function(s) in {len(self.files)} file(s)"
                         + (f": {', '.join(parts)}" if parts else "")
                         + (f"; {len(self.global_findings)} file-scope finding(s)"
                            if self.global_findings else ""))
        for g in self.global_findings:
            lines.append(f"  [{g.verdict.value}] {_where(g)}: {g.message}")
            if g.code:
                lines.append(f"      {g.code}")
        for fr in self.functions:
            where = f" ({fr.file}:{fr.line})" if fr.file and fr.line else ""
            lines.append(f"{fr.name}{where} [{fr.status}]: {fr.verdict.value}")
            for fd in fr.findings:
                lines.append(f"  - {_where(fd)} {fd.kind}: {fd.message}")
                if fd.code:
                    lines.append(f"      {fd.code}")
        for n in self.notes:
            lines.append(f"note: {n}")
        lines.append(
            "exit status: "
            f"{self.exit_code} (0 safe, 3 needs review, 4 cannot be applied by swapping bodies)"
        )
        return "\n".join(lines) + "\n"

    def to_sarif(self) -> dict[str, Any]:
        """SARIF 2.1.0 log object (json.dump it to write a .sarif file)."""
        kinds = sorted(RULES)
        results = []
        for fd in self.all_findings():
            res: dict[str, Any] = {
                "ruleId": fd.kind,
                "ruleIndex": kinds.index(fd.kind) if fd.kind in RULES else -1,
                "level": "error" if fd.verdict is Verdict.UNSUPPORTED else "warning",
                "message": {"text": fd.message},
            }
            if fd.file:
                region: dict[str, Any] = {"startLine": max(1, fd.line or 1)}
                if fd.code:
                    region["snippet"] = {"text": fd.code}
                res["locations"] = [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": fd.file},
                        "region": region,
                    },
                    **({"logicalLocations": [{"name": fd.function, "kind": "function"}]}
                       if fd.function else {}),
                }]
            if res["ruleIndex"] < 0:
                del res["ruleIndex"]
            props = {k: v for k, v in (("function", fd.function), ("via", fd.via),
                                       ("target", fd.target), ("usedBy", fd.used_by)) if v}
            if props:
                res["properties"] = props
            results.append(res)
        rules = [{
            "id": k,
            "name": "".join(p.title() for p in k.split("-")),
            "shortDescription": {"text": RULES[k][1]},
            "defaultConfiguration": {
                "level": "error" if RULES[k][0] is Verdict.UNSUPPORTED else "warning"
            },
            "properties": {"verdict": RULES[k][0].value},
        } for k in kinds]
        return {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "opus-bpf-analyze",
                    "informationUri": "https://www.usenix.org/legacy/event/sec05/tech/altekar.html",
                    "version": "0.1.0",
                    "rules": rules,
                }},
                "results": results,
                "invocations": [{
                    "executionSuccessful": True,
                    "exitCode": self.exit_code,
                    "toolExecutionNotifications": [
                        {"level": "note", "message": {"text": n}} for n in self.notes
                    ],
                }],
                "properties": {"verdict": self.verdict.value},
            }],
        }

    def to_sarif_json(self) -> str:
        return json.dumps(self.to_sarif(), indent=2)


def _where(f: Finding) -> str:
    if f.file and f.line:
        return f"{f.file}:{f.line}"
    return f.file or "?"
