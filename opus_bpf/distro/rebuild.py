"""Rebuild the installed version the way Debian does, under the compile-command capture, and
prove the result is the installed binary.

The rebuild is `dpkg-buildpackage -b -uc -us` (DEB_BUILD_OPTIONS=nocheck) run by
`patchbuild.capture` in a copy of the unpacked source, so the patch is later compiled with each
file's real flags. dpkg-buildpackage sets SOURCE_DATE_EPOCH from debian/changelog and Debian
builds with -ffile-prefix-map, so the build path does not matter: with the build dependencies
at the versions Debian used, the rebuilt file is bit-identical to the installed one.

Proof, in order: equal build-ids (then the rebuilt -dbgsym debug file is the installed
binary's); else every SHF_ALLOC section except .note.gnu.build-id byte-identical (same code
and data at the same addresses: only the DWARF moved, e.g. line numbers of another header
version; the debug file is adopted with the installed build-id); else refuse, naming the
sections.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from opus_bpf.patchbuild.capture import capture_compile_commands
from opus_bpf.patchbuild.errors import BuildError

from .errors import RebuildFailed, RebuildMismatch
from .sources import Progress, _quiet, unpacked, version_dir

DEBUG_ROOT = Path("/usr/lib/debug")
BUILD_CMD = "dpkg-buildpackage -b -uc -us"
STAMP = "rebuild.json"


@dataclass
class Rebuild:
    """A finished rebuild of one source version, in the cache."""

    source: str
    version: str
    src: Path  # the built copy of the unpacked source (what --src means for the patch build)
    workdir: Path  # capture work directory: tree/ (built copy), *.deb, compile_commands.json
    compile_commands: Path
    seconds: float  # dpkg-buildpackage under the capture, when it ran
    cached: bool = False
    entries: int = 0
    debs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def ensure_build_deps(src: Path, progress: Progress = _quiet) -> float:
    """Install what `dpkg-checkbuilddeps` says is missing (apt-get build-dep on the tree)."""
    if _run(["dpkg-checkbuilddeps", "-B"], cwd=src).returncode == 0:
        return 0.0
    progress(f"installing build dependencies of {src.parent.name} (apt-get build-dep)")
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    p = _run(["apt-get", "build-dep", "-y", "--no-install-recommends", "-o",
              "Dpkg::Options::=--force-confold", "./"], cwd=src, env=env)
    if p.returncode != 0:
        last = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("E:")]
        raise RebuildFailed(f"apt-get build-dep for {src} failed: "
                            f"{(last or ['?'])[0]}; install the build dependencies by hand")
    return time.monotonic() - t0


def _built_tree_view(r: Rebuild) -> Rebuild:
    """Point the rebuild at the built copy: configure-generated headers (libevent's
    evconfig-private.h, redis's release.h) exist only there, so a patch is analysed and
    compiled in the tree exactly as dpkg-buildpackage left it (patches applied, configured)."""
    tree = r.workdir / "tree"
    view = r.workdir / "compile_commands.tree.json"
    if not view.is_file() or view.stat().st_mtime < r.compile_commands.stat().st_mtime:
        entries = json.loads(r.compile_commands.read_text())
        src = str(r.src)

        def move(v: str) -> str:
            return str(tree) + v[len(src):] if v == src or v.startswith(src + "/") else \
                v.replace("=" + src + "/", "=" + str(tree) + "/").replace(
                    "-I" + src + "/", "-I" + str(tree) + "/")

        for e in entries:
            e["directory"] = move(e["directory"])
            e["file"] = move(e["file"])
            if "arguments" in e:
                e["arguments"] = [move(a) for a in e["arguments"]]
        view.write_text(json.dumps(entries, indent=1) + "\n")
    r.src, r.compile_commands = tree, view
    return r


def rebuild(source: str, version: str, progress: Progress = _quiet,
            jobs: int | None = None) -> Rebuild:
    """The cached rebuild of *source* at *version*, building it (under the capture) if needed."""
    vdir = version_dir(source, version)
    work = vdir / "build"
    stamp = work / STAMP
    if stamp.is_file():
        d = json.loads(stamp.read_text())
        r = Rebuild(source, version, Path(d["src"]), work, Path(d["compile_commands"]),
                    d["seconds"], True, d.get("entries", 0), d.get("debs", []))
        if r.compile_commands.is_file() and r.src.is_dir() and (work / "tree").is_dir():
            progress(f"rebuild of {source} {version} cached ({work})")
            return _built_tree_view(r)
    src = unpacked(source, version, progress)
    ensure_build_deps(src, progress)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    n = jobs or os.cpu_count() or 1
    cmd = (f"DEB_BUILD_OPTIONS='nocheck parallel={n}' {BUILD_CMD} "
           f"> ../dpkg-buildpackage.log 2>&1")
    progress(f"rebuilding {source} {version} with `{BUILD_CMD}` (nocheck, parallel={n}) "
             f"under the compile-command capture in {work}")
    try:
        cap = capture_compile_commands(src, cmd, workdir=work, reuse=False, timeout=4 * 3600)
    except BuildError as e:
        log = work / "dpkg-buildpackage.log"
        tail = [ln for ln in log.read_text(errors="replace").splitlines()
                if "error" in ln.lower()][:1] if log.is_file() else []
        raise RebuildFailed(f"rebuilding {source} {version} failed"
                            f"{': ' + tail[0].strip() if tail else ''}; see {log}") from e
    debs = sorted(p.name for p in work.glob("*.deb"))
    progress(f"rebuilt {source} {version} in {cap.seconds:.1f} s: {len(debs)} packages, "
             f"{cap.entries} compile commands")
    r = Rebuild(source, version, src, work, cap.path, cap.seconds, False, cap.entries, debs)
    stamp.write_text(json.dumps(r.to_dict(), indent=1) + "\n")
    return _built_tree_view(r)


def extract_deb(work: Path, package: str, dbgsym: bool = False) -> Path | None:
    """The rebuilt binary package *package* (or its -dbgsym) unpacked under work/extract/."""
    name = f"{package}-dbgsym" if dbgsym else package
    debs = sorted(work.glob(f"{name}_*.deb")) + sorted(work.glob(f"{name}_*.ddeb"))
    if not debs:
        return None
    dest = work / "extract" / name
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".x-", dir=work))
        p = _run(["dpkg-deb", "-x", str(debs[0]), str(tmp)])
        if p.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RebuildFailed(f"dpkg-deb -x {debs[0]} failed: {p.stderr.strip()[:200]}")
        dest.parent.mkdir(exist_ok=True)
        tmp.rename(dest)
    return dest


def build_id(path: str | os.PathLike[str]) -> str | None:
    """NT_GNU_BUILD_ID of an ELF file, hex."""
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec.header.sh_type == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
    return None


def _alloc_sections(elf: ELFFile) -> dict[str, tuple[int, int, bytes | None]]:
    out = {}
    for sec in elf.iter_sections():
        if not sec.header.sh_flags & SH_FLAGS.SHF_ALLOC:
            continue
        data = None if sec.header.sh_type == "SHT_NOBITS" else sec.data()
        out[sec.name] = (sec.header.sh_addr, sec.header.sh_size, data)
    return out


@dataclass
class Comparison:
    """How the rebuilt file relates to the installed one."""

    installed: str
    rebuilt: str
    installed_build_id: str | None
    rebuilt_build_id: str | None
    identical: bool  # byte for byte
    differing: list[str]  # SHF_ALLOC sections (build-id note excluded) that differ

    @property
    def same_build_id(self) -> bool:
        return self.installed_build_id is not None and \
            self.installed_build_id == self.rebuilt_build_id

    @property
    def usable(self) -> bool:
        return self.same_build_id or not self.differing

    def describe(self) -> str:
        if self.identical:
            return "rebuilt file is byte-identical to the installed one"
        if self.same_build_id:
            return f"build-id {self.installed_build_id} matches"
        if not self.differing:
            return (f"build-id differs ({self.rebuilt_build_id} rebuilt, "
                    f"{self.installed_build_id} installed) but every loaded section is "
                    "byte-identical: same code and data, only the debug information moved")
        return f"loaded sections differ: {', '.join(self.differing)}"


def compare(installed: str | os.PathLike[str], rebuilt: str | os.PathLike[str]) -> Comparison:
    """Compare two ELF files: build-ids and every allocated (loaded) section."""
    ia, ib = Path(installed), Path(rebuilt)
    try:
        identical = hashlib.sha256(ia.read_bytes()).digest() == \
            hashlib.sha256(ib.read_bytes()).digest()
        with open(ia, "rb") as fa, open(ib, "rb") as fb:
            ea, eb = ELFFile(fa), ELFFile(fb)
            sa, sb = _alloc_sections(ea), _alloc_sections(eb)
    except (OSError, ELFError) as e:
        raise RebuildMismatch(f"cannot compare {ia} with {ib}: {e}") from e
    differing = [n for n in dict.fromkeys([*sa, *sb])
                 if n != ".note.gnu.build-id" and sa.get(n) != sb.get(n)]
    return Comparison(str(ia), str(ib), build_id(ia), build_id(ib), identical, differing)


def likely_cause(differing: list[str]) -> str:
    """What usually makes these sections differ in a rebuild of the same source version."""
    code = {".text", ".rodata", ".data", ".data.rel.ro", ".eh_frame", ".eh_frame_hdr"}
    if set(differing) & code:
        return ("the code differs: a build dependency (headers, static library) or the "
                "compiler is at another version than in Debian's build (compare with the "
                "package's .buildinfo), or the installed file is not from this source version")
    return ("only linking metadata differs (dynamic symbols, relocations, version needs): "
            "a library the build links against is at another version than in Debian's build")


def debug_target(build_id_hex: str, root: Path = DEBUG_ROOT) -> Path:
    """Where a -dbgsym package puts the debug file of a build-id (gdb and opus-bpf look there)."""
    return root / ".build-id" / build_id_hex[:2] / f"{build_id_hex[2:]}.debug"


def _note_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".note.gnu.build-id")
        if sec is None:
            raise RebuildMismatch(f"{path} has no .note.gnu.build-id section")
        return sec.data()


def install_debug_file(cmp: Comparison, rebuilt_debug: Path, cache_dir: Path,
                       root: Path = DEBUG_ROOT) -> tuple[Path, bool]:
    """Install the rebuilt debug file where the installed binary's own -dbgsym would put it.

    Returns (path, adopted). With equal build-ids it is copied as it is. With only the build-id
    differing (loaded sections identical) a copy gets the installed build-id note
    (objcopy --update-section) and is installed under that id: *adopted*. An existing file
    with the right build-id is left alone. The installed binary is never written.
    """
    if not cmp.usable or cmp.installed_build_id is None:
        raise RebuildMismatch(f"refusing to install a debug file for {cmp.installed}: "
                              f"{cmp.describe()}")
    dest = debug_target(cmp.installed_build_id, root)
    if dest.is_file():
        try:
            if build_id(dest) == cmp.installed_build_id:
                return dest, False
        except (OSError, ELFError):
            pass
    src, adopted = rebuilt_debug, False
    if not cmp.same_build_id:
        note = cache_dir / f"{cmp.installed_build_id}.note"
        note.write_bytes(_note_bytes(Path(cmp.installed)))
        src = cache_dir / f"{cmp.installed_build_id}.debug"
        p = _run(["objcopy", f"--update-section=.note.gnu.build-id={note}",
                  str(rebuilt_debug), str(src)])
        if p.returncode != 0:
            raise RebuildMismatch(f"objcopy could not give the debug file the installed "
                                  f"build-id: {p.stderr.strip()[:200]}")
        adopted = True
    tmp = dest.with_suffix(".opus-tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        tmp.rename(dest)
    except OSError as e:
        raise RebuildFailed(f"cannot install the debug file as {dest}: {e.strerror}; run as "
                            "root (it goes where the package's -dbgsym would put it)") from e
    return dest, adopted
