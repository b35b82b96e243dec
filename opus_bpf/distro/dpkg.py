"""What dpkg and apt know about an installed file: owner package, its source package and
installed version, and the candidate version apt would install (`apt-cache policy`).

The parsers take the tools' text so they can be tested without a Debian system; the functions
around them run the tools.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import DistroError


@dataclass(frozen=True)
class Installed:
    """One installed binary package and where it came from."""

    package: str  # binary package, without :arch
    arch: str
    version: str  # binary version (may carry +bN over the source version)
    source: str  # source package
    source_version: str


@dataclass(frozen=True)
class Policy:
    """`apt-cache policy PKG`: installed and candidate versions, and every version apt knows."""

    installed: str | None
    candidate: str | None
    versions: tuple[str, ...]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LC_ALL="C")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as e:
        raise DistroError(f"{cmd[0]} is not installed: this command needs a Debian system "
                          "(dpkg and apt)") from e


def parse_dpkg_search(text: str, path: str) -> list[str]:
    """Owners of *path* in `dpkg -S` output ("pkg[:arch][, pkg2]: /path"); diversions skipped."""
    owners: list[str] = []
    for line in text.splitlines():
        if line.startswith(("diversion by", "local diversion")):
            continue
        head, sep, tail = line.partition(": ")
        if not sep or tail.strip() != path:
            continue
        owners += [p.strip() for p in head.split(",") if p.strip()]
    return owners


def _alternatives(path: str) -> list[str]:
    """/lib and /usr/lib (bin, sbin) name the same file on a merged-/usr system; dpkg knows one."""
    out = [path]
    for top in ("/lib", "/lib64", "/bin", "/sbin"):
        if path.startswith(top + "/"):
            out.append("/usr" + path)
        if path.startswith("/usr" + top + "/"):
            out.append(path[4:])
    return out


def owner(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(package[:arch], the path as dpkg knows it) of the package that installed *path*.

    Symlinks are followed first: /usr/bin/redis-server is a link to redis-check-rdb, shipped
    by redis-tools, and it is the link's target that runs and that a rebuild must reproduce.
    """
    real = os.path.realpath(path)
    tried = []
    for cand in dict.fromkeys(_alternatives(real) + _alternatives(str(path))):
        tried.append(cand)
        p = _run(["dpkg-query", "-S", cand])
        owners = parse_dpkg_search(p.stdout, cand) if p.returncode == 0 else []
        if owners:
            return owners[0], cand
    raise DistroError(f"{path} was not installed by a Debian package (dpkg -S found no owner "
                      f"for {', '.join(tried)}); use `opus-bpf build --src ... --binary ...` "
                      "for programs built locally")


def parse_query(text: str) -> Installed:
    """One line of `dpkg-query -W -f '${Package}\\t${Architecture}\\t${Version}\\t
    ${source:Package}\\t${source:Version}\\n'`."""
    fields = text.strip("\n").split("\t")
    if len(fields) != 5 or not fields[0]:
        raise DistroError(f"unexpected dpkg-query output {text.strip()!r}")
    pkg, arch, ver, src, srcver = fields
    return Installed(pkg, arch, ver, src or pkg, srcver or ver)


def installed(package: str) -> Installed:
    """Installed version and source package of *package* (name or name:arch)."""
    fmt = "${Package}\t${Architecture}\t${Version}\t${source:Package}\t${source:Version}\n"
    p = _run(["dpkg-query", "-W", "-f", fmt, package])
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if p.returncode != 0 or not lines:
        raise DistroError(f"package {package} is not installed (dpkg-query -W found nothing)")
    return parse_query(lines[0])


def parse_policy(text: str) -> Policy:
    """`apt-cache policy PKG` for one package: Installed, Candidate and the version table."""
    inst = cand = None
    versions: list[str] = []
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Installed:"):
            v = s.split(":", 1)[1].strip()
            inst = None if v == "(none)" else v
        elif s.startswith("Candidate:"):
            v = s.split(":", 1)[1].strip()
            cand = None if v == "(none)" else v
        elif s.startswith("Version table:"):
            in_table = True
        elif in_table and line.startswith("     ") and not line.startswith("       "):
            # "     5:7.0.15-1~deb12u10 500" or " *** 5:7.0.15-1~deb12u7 100"
            versions.append(s.split()[0])
        elif in_table and line.startswith(" *** "):
            versions.append(s.split()[1])
    return Policy(inst, cand, tuple(versions))


def policy(package: str) -> Policy:
    """apt's view of *package*: installed and candidate versions."""
    p = _run(["apt-cache", "policy", package])
    if p.returncode != 0 or not p.stdout.strip():
        raise DistroError(f"apt-cache policy {package} failed: {p.stderr.strip()[:200]}")
    return parse_policy(p.stdout)


def source_policy(source: str) -> Policy:
    """Versions of a *source* package apt can download (`apt-cache showsrc`)."""
    p = _run(["apt-cache", "showsrc", "--only-source", source])
    versions = [ln.split(":", 1)[1].strip() for ln in p.stdout.splitlines()
                if ln.startswith("Version:")]
    return Policy(None, None, tuple(dict.fromkeys(versions)))


def files_of(package: str) -> list[str]:
    """Files *package* installed (`dpkg -L`)."""
    p = _run(["dpkg-query", "-L", package])
    return [ln for ln in p.stdout.splitlines() if ln.startswith("/")]


def mapped_objects(pid: int) -> list[str]:
    """The executable and the file-backed mappings of a process, as paths (deleted ones too,
    marked by the kernel with ' (deleted)', are skipped: they are not the installed file)."""
    out: list[str] = []
    try:
        out.append(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return []
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and not parts[5].endswith("(deleted)"):
            out.append(parts[5])
    return list(dict.fromkeys(out))
