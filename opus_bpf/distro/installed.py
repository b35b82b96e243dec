"""`opus-bpf build --installed PATH`: a patch bundle for a file a Debian package installed.

owner (dpkg -S) -> source package and installed version -> cached rebuild of exactly that
version (rebuild.py) -> proof that the rebuild is the installed binary -> its debug file where
the -dbgsym package would put it -> the ordinary checked build (patchbuild.gate) against the
installed path, so the bundle carries the installed file's build-id.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path

from opus_bpf.analysis import Report
from opus_bpf.patchbuild.build import BuildResult
from opus_bpf.patchbuild.gate import build_checked

from . import dpkg
from .errors import DistroError, RebuildMismatch
from .patchfilter import compiled_files, filter_patch
from .rebuild import (
    Comparison,
    Rebuild,
    compare,
    extract_deb,
    install_debug_file,
    likely_cause,
    rebuild,
)
from .sources import Progress, _quiet, unpacked
from .version import compare_versions, parse_series


@dataclass
class Target:
    """An installed file, what installed it, and its proven rebuild."""

    path: str  # as dpkg knows it (symlinks resolved)
    package: dpkg.Installed
    rebuild: Rebuild
    comparison: Comparison
    debug_file: str
    debug_adopted: bool
    seconds: float  # time to get here (rebuild included when it ran)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "package": self.package.package,
            "version": self.package.version,
            "source": self.package.source,
            "source_version": self.package.source_version,
            "rebuild_seconds": round(self.rebuild.seconds, 1),
            "rebuild_cached": self.rebuild.cached,
            "compile_commands": str(self.rebuild.compile_commands),
            "installed_build_id": self.comparison.installed_build_id,
            "rebuilt_build_id": self.comparison.rebuilt_build_id,
            "byte_identical": self.comparison.identical,
            "build_id_match": self.comparison.same_build_id,
            "loaded_sections_identical": not self.comparison.differing,
            "debug_file": self.debug_file,
            "debug_file_adopted": self.debug_adopted,
            "seconds": round(self.seconds, 1),
        }


def prepare(path: str | os.PathLike[str], progress: Progress = _quiet) -> Target:
    """Owner, rebuild, proof and debug file of an installed file; refuse if not provable."""
    t0 = time.monotonic()
    pkg_arch, known = dpkg.owner(path)
    pkg = dpkg.installed(pkg_arch)
    progress(f"{path}: {known} from {pkg.package} {pkg.version} "
             f"(source {pkg.source} {pkg.source_version})")
    rb = rebuild(pkg.source, pkg.source_version, progress)
    extracted = extract_deb(rb.workdir, pkg.package)
    if extracted is None:
        raise DistroError(f"the rebuild of {pkg.source} {pkg.source_version} produced no "
                          f"{pkg.package} package (built: {', '.join(rb.debs) or 'none'})")
    rebuilt = extracted / known.lstrip("/")
    if rebuilt.is_symlink() or not rebuilt.is_file():
        raise DistroError(f"the rebuilt {pkg.package} has no file {known}")
    cmp = compare(os.path.realpath(known), rebuilt)
    if not cmp.usable:
        raise RebuildMismatch(
            f"the rebuild of {pkg.source} {pkg.source_version} is not the installed {known}: "
            f"{cmp.describe()}; likely cause: {likely_cause(cmp.differing)}")
    progress(cmp.describe())
    dbg_pkg = extract_deb(rb.workdir, pkg.package, dbgsym=True)
    dbg = None
    if dbg_pkg is not None and cmp.rebuilt_build_id:
        c = dbg_pkg / "usr/lib/debug/.build-id" / cmp.rebuilt_build_id[:2] / \
            f"{cmp.rebuilt_build_id[2:]}.debug"
        dbg = c if c.is_file() else None
    if dbg is None:
        raise DistroError(f"the rebuild of {pkg.source} {pkg.source_version} has no debug file "
                          f"for {known} (no {pkg.package}-dbgsym package with build-id "
                          f"{cmp.rebuilt_build_id}); is DEB_BUILD_OPTIONS=nostrip/noautodbgsym "
                          "set?")
    dest, adopted = install_debug_file(cmp, dbg, rb.workdir)
    progress(f"debug file {dest}" + (" (adopted: installed build-id written into the "
                                     "rebuilt debug file)" if adopted else ""))
    return Target(known, pkg, rb, cmp, str(dest), adopted, time.monotonic() - t0)


def candidate_source_version(package: str, installed_version: str) -> str | None:
    """Source version of the candidate apt would install for *package*, if newer."""
    from .pending import candidate_source

    pol = dpkg.policy(package)
    if pol.candidate and compare_versions(pol.candidate, installed_version) > 0:
        return candidate_source(package, pol.candidate)[1]
    return None


def debian_patch(source: str, name: str, from_version: str | None,
                 progress: Progress = _quiet, package: dpkg.Installed | None = None
                 ) -> tuple[Path, str]:
    """The file of patch *name* in debian/patches of *source* at *from_version* (default: the
    source of the candidate apt would install for *package*, else the newest source version
    apt can download), and that version."""
    if from_version is None and package is not None:
        from_version = candidate_source_version(package.package, package.version)
    if from_version is None:
        versions = dpkg.source_policy(source).versions
        if not versions:
            raise DistroError(f"apt knows no source package {source}; add a deb-src entry "
                              "(docs/distro.md) or pass --from-version")
        from_version = max(versions, key=cmp_to_key(compare_versions))
    tree = unpacked(source, from_version, progress)
    series_file = tree / "debian" / "patches" / "series"
    names = parse_series(series_file.read_text()) if series_file.is_file() else []
    cands = [n for n in names if n == name or Path(n).name == name]
    if not cands:
        near = [n for n in names if name.lower() in n.lower()]
        raise DistroError(f"{source} {from_version} has no debian patch {name}"
                          + (f" (did you mean {', '.join(near[:3])}?)" if near else
                             f" ({len(names)} patches in its series)"))
    return tree / "debian" / "patches" / cands[0], from_version


@dataclass
class InstalledBuild:
    """What `build --installed` did."""

    target: Target
    result: BuildResult
    report: Report
    patch: str
    patch_from: str | None = None
    dropped: list[str] = field(default_factory=list)  # patch files no binary is built from


def build_installed(path: str | os.PathLike[str], output: str | os.PathLike[str], *,
                    patch: str | os.PathLike[str] | None = None,
                    debian_patch_name: str | None = None, from_version: str | None = None,
                    accept_review: bool = False, ignore_register_risk: bool = False,
                    progress: Progress = _quiet) -> InstalledBuild:
    """Build a bundle for the installed *path* from a diff or a Debian patch of a newer
    version, applied on top of the installed version's source."""
    target = prepare(path, progress)
    patch_from = None
    if debian_patch_name is not None:
        pfile, patch_from = debian_patch(target.package.source, debian_patch_name, from_version,
                                         progress, package=target.package)
    elif patch is not None:
        pfile = Path(patch)
    else:
        raise DistroError("give the fix: --patch FILE or --debian-patch NAME")
    pfile, dropped = filter_patch(
        pfile, compiled_files(target.rebuild.compile_commands, target.rebuild.src),
        target.rebuild.workdir.parent / "patches" / pfile.name)
    if dropped:
        progress(f"{pfile.name}: left out {', '.join(dropped)} (no binary is built from them)")
    progress(f"building {pfile.name} against {target.path} (build-id "
             f"{target.comparison.installed_build_id})")
    res, report = build_checked(
        target.rebuild.src, pfile, target.path, output,
        compile_commands=target.rebuild.compile_commands,
        accept_review=accept_review, ignore_register_risk=ignore_register_risk)
    return InstalledBuild(target, res, report, str(pfile), patch_from, dropped)
