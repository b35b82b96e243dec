"""Exactly one version of a source package, downloaded once and unpacked once per version.

Cache layout (root: $OPUS_BPF_CACHE_DIR, default /var/cache/opus-bpf/rebuild):

    <root>/<source>_<version>/dl/     the .dsc, tarballs (apt-get source --download-only)
    <root>/<source>_<version>/src/    dpkg-source -x: upstream + debian/patches applied
    <root>/<source>_<version>/build/  the rebuild (rebuild.py)

`src/` is never built in: every build works on a copy, so it stays the tree the installed
binary was built from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import dpkg
from .errors import SourceUnavailable
from .version import strip_epoch

DEFAULT_CACHE = Path("/var/cache/opus-bpf/rebuild")
Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def cache_root() -> Path:
    """$OPUS_BPF_CACHE_DIR or /var/cache/opus-bpf/rebuild."""
    return Path(os.environ.get("OPUS_BPF_CACHE_DIR") or DEFAULT_CACHE)


def version_dir(source: str, version: str) -> Path:
    """The cache directory of one source version (':' of an epoch is not kept in file names)."""
    return cache_root() / f"{source}_{version.replace(':', '%3a')}"


def _dsc(dl: Path, source: str, version: str) -> Path | None:
    p = dl / f"{source}_{strip_epoch(version)}.dsc"
    return p if p.is_file() else None


def _failure_line(out: str) -> str:
    """The one line of apt-get's output that says why a download failed."""
    for pat in (r".*404\s+Not Found.*", r"E: Unable to find a source package.*",
                r"E: Can not find version.*", r"E: You must put some 'deb-src'.*",
                r"E: Failed to fetch.*", r"E: .*"):
        m = re.search(pat, out)
        if m:
            return m.group(0).strip()
    return out.strip().splitlines()[-1] if out.strip() else "no output"


def _unavailable(source: str, version: str, out: str) -> str:
    """One line: which source version cannot be had, why, and what to do."""
    why = _failure_line(out)
    if "deb-src" in why:
        return (f"source {source} {version} cannot be downloaded: no deb-src entry; add one "
                "(docs/distro.md)")
    known = dpkg.source_policy(source).versions
    if "404" in why:
        return (f"source {source} {version} is listed but the mirror answers 404 Not Found for "
                f"it; try again later or add a snapshot.debian.org deb-src entry")
    if known:
        return (f"source {source} {version} is not on the configured deb-src mirrors (they "
                f"have {', '.join(known)}); add a snapshot.debian.org deb-src entry for it")
    return f"source {source} {version} cannot be downloaded: {why}"


def download(source: str, version: str, progress: Progress = _quiet) -> Path:
    """The .dsc of *source* at *version* in the cache, downloaded with apt-get source if needed."""
    dl = version_dir(source, version) / "dl"
    found = _dsc(dl, source, version)
    if found:
        return found
    dl.mkdir(parents=True, exist_ok=True)
    os.chmod(dl, 0o755)
    progress(f"downloading source {source} {version} (apt-get source)")
    t0 = time.monotonic()
    env = dict(os.environ, LC_ALL="C")
    p = subprocess.run(["apt-get", "source", "--download-only", f"{source}={version}"],
                       cwd=dl, capture_output=True, text=True, env=env, check=False)
    found = _dsc(dl, source, version)
    if p.returncode != 0 or found is None:
        raise SourceUnavailable(_unavailable(source, version, p.stdout + "\n" + p.stderr))
    progress(f"downloaded {source} {version} in {time.monotonic() - t0:.1f} s")
    return found


def unpacked(source: str, version: str, progress: Progress = _quiet) -> Path:
    """The unpacked source tree of *source* at *version* (dpkg-source -x, patches applied)."""
    vdir = version_dir(source, version)
    src = vdir / "src"
    if (src / "debian" / "changelog").is_file():
        return src
    dsc = download(source, version, progress)
    progress(f"unpacking {dsc.name}")
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=vdir))
    try:
        p = subprocess.run(["dpkg-source", "--no-check", "-x", str(dsc), str(tmp / "src")],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SourceUnavailable(f"dpkg-source -x {dsc} failed: "
                                    f"{(p.stderr.strip().splitlines() or ['?'])[-1]}")
        if src.exists():
            shutil.rmtree(src)
        (tmp / "src").rename(src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return src
