"""`opus-bpf pending`: the security fixes waiting for running processes, and which of them can
be applied live.

processes -> executable + mapped files -> owning packages (one `dpkg-query -S` call) ->
installed vs candidate version (`apt-cache policy`) -> debian/patches the candidate's source
has and the installed one lacks -> the OPUS analysis of each patch against the installed
source, with the compile commands of its cached rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from opus_bpf.errors import OpusError

from . import dpkg
from .errors import DistroError
from .patchfilter import compiled_files, filter_patch
from .rebuild import rebuild
from .sources import Progress, _quiet, unpacked, version_dir
from .version import changelog_since, compare_versions, patch_difference

# analysis verdict -> what it means for a running process
VERDICT_MEANING = {
    "safe": "live-applicable",
    "review": "needs review",
    "unsupported": "needs a restart",
    "no-code": "no compiled code changed",
    "does-not-apply": "does not apply to the installed source",
    "error": "analysis failed",
    "not-analysed": "changes C code (not analysed: --no-analysis)",
}


@dataclass
class PatchVerdict:
    """One waiting patch and what the analysis says about applying it live."""

    name: str
    status: str  # new | changed
    verdict: str  # safe | review | unsupported | no-code | does-not-apply | error
    reason: str = ""
    functions: list[str] = field(default_factory=list)
    cves: list[str] = field(default_factory=list)
    path: str = ""
    dropped: list[str] = field(default_factory=list)  # files of the patch no binary is built from

    @property
    def meaning(self) -> str:
        return VERDICT_MEANING.get(self.verdict, self.verdict)

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "verdict": self.verdict,
                "meaning": self.meaning, "reason": self.reason, "functions": self.functions,
                "cves": self.cves, "path": self.path, "dropped": self.dropped}


@dataclass
class SourceUpdate:
    """A source package some process runs code of, installed at one version, newer available."""

    source: str
    installed: str
    candidate: str | None
    packages: list[str]
    files: dict[str, list[int]]  # installed file -> pids mapping it
    patches: list[PatchVerdict] = field(default_factory=list)
    error: str | None = None
    changelog: dict[str, list[str]] = field(default_factory=dict)  # version -> CVEs named

    def to_dict(self) -> dict:
        return {"source": self.source, "installed": self.installed,
                "candidate": self.candidate, "packages": self.packages,
                "files": self.files, "patches": [p.to_dict() for p in self.patches],
                "changelog_cves": self.changelog, "error": self.error}


def all_pids() -> list[int]:
    """Every user-space process except this one (kernel threads have no executable)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me and os.path.exists(f"/proc/{d}/exe"):
            try:
                os.readlink(f"/proc/{d}/exe")
            except OSError:
                continue
            out.append(int(d))
    return sorted(out)


def owners_batch(paths: list[str]) -> dict[str, tuple[str, str]]:
    """path -> (package[:arch], path as dpkg knows it), for the paths some package owns."""
    cands: dict[str, str] = {}
    for p in paths:
        for alt in dpkg._alternatives(os.path.realpath(p)) + dpkg._alternatives(p):
            cands.setdefault(alt, p)
    if not cands:
        return {}
    out: dict[str, tuple[str, str]] = {}
    proc = dpkg._run(["dpkg-query", "-S", *cands])
    for line in proc.stdout.splitlines():
        head, sep, tail = line.partition(": ")
        tail = tail.strip()
        if not sep or tail not in cands or head.startswith(("diversion", "local diversion")):
            continue
        orig = cands[tail]
        if orig not in out:
            out[orig] = (head.split(",")[0].strip(), tail)
    return out


def candidate_source(package: str, version: str) -> tuple[str, str]:
    """(source package, source version) of *package* at *version* (`apt-cache show`)."""
    p = dpkg._run(["apt-cache", "show", f"{package}={version}"])
    return parse_source_field(p.stdout, package.split(":")[0], version)


def parse_source_field(text: str, package: str, version: str) -> tuple[str, str]:
    """The `Source:` field of one `apt-cache show` stanza ("redis" or "openssl (3.0.15-1)")."""
    for line in text.splitlines():
        if not line.strip():
            break
        m = re.match(r"Source:\s*(\S+)(?:\s+\((\S+)\))?", line)
        if m:
            return m.group(1), m.group(2) or version
    return package, version


def collect(pids: list[int], progress: Progress = _quiet) -> list[SourceUpdate]:
    """Source packages with a newer candidate, for the code the processes have mapped."""
    files: dict[str, list[int]] = {}
    for pid in pids:
        for path in dpkg.mapped_objects(pid):
            files.setdefault(path, []).append(pid)
    progress(f"{len(pids)} processes map {len(files)} files")
    owned = owners_batch(list(files))
    by_pkg: dict[str, dict[str, list[int]]] = {}
    for path, (pkg, known) in owned.items():
        by_pkg.setdefault(pkg, {}).setdefault(known, [])
        by_pkg[pkg][known] = sorted(set(by_pkg[pkg][known]) | set(files[path]))
    updates: dict[tuple[str, str], SourceUpdate] = {}
    for pkg, pfiles in sorted(by_pkg.items()):
        try:
            inst = dpkg.installed(pkg)
            pol = dpkg.policy(pkg)
        except OpusError as e:  # one odd package must not hide the others
            progress(f"skipping {pkg}: {e.message}")
            continue
        if not pol.candidate or compare_versions(pol.candidate, inst.version) <= 0:
            continue
        src, cand_src_ver = candidate_source(pkg, pol.candidate)
        if compare_versions(cand_src_ver, inst.source_version) <= 0:
            progress(f"{pkg}: {inst.version} -> {pol.candidate} is a rebuild of the same source "
                     f"{inst.source} {inst.source_version} (binNMU): nothing to patch")
            continue
        key = (inst.source, inst.source_version)
        u = updates.get(key)
        if u is None:
            u = updates[key] = SourceUpdate(inst.source, inst.source_version, cand_src_ver,
                                            [], {})
        u.packages.append(f"{inst.package} {inst.version} -> {pol.candidate}")
        for f, ps in pfiles.items():
            u.files[f] = ps
    progress(f"{len(by_pkg)} packages, {len(updates)} source packages with a newer version")
    return list(updates.values())


def _cves(patch: Path) -> list[str]:
    text = patch.name + "\n" + patch.read_text(errors="replace")[:4000]
    return sorted(set(m.upper() for m in re.findall(r"CVE-\d{4}-\d{4,}", text, re.I)))


def _touches_code(patch: Path) -> bool:
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            if name.endswith((".c", ".h")):
                return True
    return False


def _patch_ok(tree: Path, patch: Path, reverse: bool = False) -> bool:
    args = ["patch", "-p1", "--dry-run", "--batch", "-s", "-f", "-i", str(patch)]
    if reverse:
        args.insert(1, "-R")
    return subprocess.run(args, cwd=tree, capture_output=True).returncode == 0


def _why_not_applying(tree: Path, patch: Path, earlier: list[Path]) -> str:
    """Why a waiting patch does not apply to the installed source: already in it, or it
    needs earlier waiting patches (tried one at a time on a copy), or its context changed."""
    if _patch_ok(tree, patch, reverse=True):
        return "already applied in the installed source (under another name)"
    with tempfile.TemporaryDirectory(prefix="opus-pending-") as tmp:
        for e in reversed(earlier):
            copy = Path(tmp) / e.name
            shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(".pc"))
            subprocess.run(["patch", "-p1", "--batch", "-s", "-f", "-i", str(e)], cwd=copy,
                           capture_output=True)
            if _patch_ok(copy, patch):
                return f"applies only on top of {e.name} (an earlier patch of the update)"
            shutil.rmtree(copy, ignore_errors=True)
    return "its context is not in the installed source (the code changed in between)"


def _analysis_digest() -> str:
    """Changes whenever the analysis code does: cached verdicts of another version are stale."""
    from opus_bpf import analysis, cfront

    h = hashlib.sha256()
    for pkg in (analysis, cfront):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _verdict_cache(update: SourceUpdate, patch: Path, cc: Path | None) -> Path:
    h = hashlib.sha256(patch.read_bytes())
    if cc is not None and cc.is_file():
        # a parallel build logs its compile commands in another order every time
        entries = sorted(json.loads(cc.read_text()), key=lambda e: (e["directory"], e["file"]))
        h.update(json.dumps(entries, sort_keys=True).encode())
    h.update(_analysis_digest().encode())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", patch.name)
    return version_dir(update.source, update.installed) / "verdicts" / \
        f"{safe}-{h.hexdigest()[:12]}.json"


def analyse(update: SourceUpdate, progress: Progress = _quiet, verdicts: bool = True) -> None:
    """Fill *update* with the waiting patches and (with *verdicts*) their verdicts: downloads
    both sources, and rebuilds the installed version when its compile commands are not
    cached."""
    from opus_bpf.analysis import analyze_tree

    try:
        new = unpacked(update.source, update.candidate or "", progress)
    except OpusError as e:
        update.error = e.message
        return
    log = new / "debian" / "changelog"
    if log.is_file():
        since = changelog_since(log.read_text(errors="replace"), update.installed)
        update.changelog = {v: c for v, c in since.items()}
    try:
        old = unpacked(update.source, update.installed, progress)
    except OpusError as e:
        update.error = e.message
        return
    changes = patch_difference(old, new)
    progress(f"{update.source}: {len(changes)} patches in {update.candidate} not in "
             f"{update.installed}")
    code = [c for c in changes if _touches_code(c.path)]
    cc = None
    if not verdicts:
        for c in changes:
            update.patches.append(PatchVerdict(
                c.name, c.status, "not-analysed" if c in code else "no-code", path=str(c.path),
                cves=_cves(c.path)))
        return
    if code:
        try:
            rb = rebuild(update.source, update.installed, progress)
            old, cc = rb.src, rb.compile_commands
        except OpusError as e:
            update.error = f"no compile commands ({e.message}); verdicts without them"
    for i, c in enumerate(changes):
        pv = PatchVerdict(c.name, c.status, "no-code", path=str(c.path), cves=_cves(c.path))
        update.patches.append(pv)
        if c not in code:
            pv.reason = "touches no .c/.h file (tests, documentation or packaging)"
            continue
        patch = c.path
        if cc is not None:
            patch, dropped = filter_patch(c.path, compiled_files(cc, old),
                                          version_dir(update.source, update.installed)
                                          / "patches" / c.name)
            pv.dropped = dropped
        if not _patch_ok(old, patch):
            pv.verdict = "does-not-apply"
            pv.reason = _why_not_applying(old, patch, [e.path for e in changes[:i]])
            continue
        cache = _verdict_cache(update, patch, cc)
        if cache.is_file():
            d = json.loads(cache.read_text())
            pv.verdict, pv.reason, pv.functions = d["verdict"], d["reason"], d["functions"]
            progress(f"{c.name}: {pv.verdict} (cached analysis)")
            continue
        progress(f"analysing {c.name}")
        t0 = time.monotonic()
        try:
            report = analyze_tree(old, patch, compile_commands=cc)
        except OpusError as e:
            pv.verdict, pv.reason = "error", e.message
            continue
        except Exception as e:  # noqa: BLE001 - one patch's failure must not hide the others
            pv.verdict, pv.reason = "error", f"{type(e).__name__}: {e}"
            continue
        pv.verdict = str(report.verdict)
        j = report.to_json()
        pv.functions = [f["name"] for f in j.get("functions", [])
                        if f.get("name") and f.get("status") in ("changed", "added")]
        if pv.verdict != "safe":
            pv.reason = report.first_reason(report.verdict)
        progress(f"{c.name}: {pv.verdict} ({time.monotonic() - t0:.0f} s)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"verdict": pv.verdict, "reason": pv.reason,
                                     "functions": pv.functions}) + "\n")


def pending(pids: list[int], progress: Progress = _quiet, analyse_patches: bool = True
            ) -> list[SourceUpdate]:
    """Waiting fixes for the code *pids* run, with verdicts."""
    if not pids:
        raise DistroError("no process to look at; pass --pid PID or --all")
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            raise DistroError(f"no process {pid}")
    updates = collect(pids, progress)
    for u in updates:
        analyse(u, progress, verdicts=analyse_patches)
    return updates


def table(updates: list[SourceUpdate]) -> str:
    """The report for people."""
    if not updates:
        return "no pending updates for the code these processes run"
    lines = []
    for u in updates:
        pids = sorted({p for ps in u.files.values() for p in ps})
        lines.append(f"{u.source} {u.installed} -> {u.candidate}  "
                     f"(processes {', '.join(map(str, pids[:8]))}"
                     f"{' ...' if len(pids) > 8 else ''}; {', '.join(sorted(u.files)[:3])})")
        if u.error:
            lines.append(f"  ! {u.error}")
            cves = sorted({c for cs in u.changelog.values() for c in cs})
            if cves:
                lines.append(f"  changelog since {u.installed}: {', '.join(cves)} (no verdicts "
                             "without the installed source)")
        w = max((len(p.name) for p in u.patches), default=10)
        for p in u.patches:
            fn = f" [{', '.join(p.functions[:4])}]" if p.functions else ""
            why = f": {p.reason}" if p.reason else ""
            lines.append(f"  {p.name:<{w}}  {p.meaning}{fn}{why}")
        if not u.patches and not u.error:
            lines.append("  no debian/patches difference (the update changes something else)")
    return "\n".join(lines)
