"""Real security patches: Debian 12's unzip 6.0-28 quilt series, each patch analysed against
the tree with the patches before it applied, built with debian/rules' flags; the same for
giflib 5.2.1-2.5+deb12u1's security patches; and zlib 1.2.13's fix for CVE-2022-37434.

Needs `apt-get source` (deb-src for bookworm); skipped when the sources cannot be fetched.
Run with: pytest -m slow tests/analysis/test_debian.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from opus_bpf.analysis import analyze_tree

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("OPUS_DEBSRC_CACHE", "/tmp/opus-debsrc"))
# debian/rules: DEFINES, plus -I. from the unix/Makefile invocation
FLAGS = ("-I. -DACORN_FTYPE_NFS -DWILD_STOP_AT_DIR -DLARGE_FILE_SUPPORT -DUNICODE_SUPPORT "
         "-DUNICODE_WCHAR -DUTF8_MAYBE_NATIVE -DNO_LCHMOD -DDATE_FORMAT=DF_YMD -DUSE_BZIP2 "
         "-DIZ_HAVE_UXUIDGID -DNOMEMCPY -DNO_WORKING_ISPRINT")

# patch -> (expected verdict, {function: verdict} that must hold, why)
EXPECT: dict[str, tuple[str, dict[str, str], str]] = {
    "09-cve-2014-8139-crc-overflow.patch": (
        "safe", {"TestExtraField": "safe"},
        "a minimum-length check that only prints a warning through the message callback "
        "(G.message) the old code already called; the new message string is const data"),
    "10-cve-2014-8140-test-compr-eb.patch": (
        "safe", {"test_compr_eb": "safe"},
        "tightens the condition of an existing `return IZ_EF_TRUNC`; no new value or write"),
    "11-cve-2014-8141-getzip64data.patch": (
        "review", {"getZip64Data": "review", "do_string": "safe"},
        "getZip64Data could only return PK_COOL; the fix makes it return PK_ERR, which its "
        "callers never saw"),
    "12-cve-2014-9636-test-compr-eb.patch": (
        "review", {"test_compr_eb": "review"},
        "test_compr_eb now returns PK_ERR, a value it never returned"),
    "14-cve-2015-7696.patch": (
        "review", {"decrypt": "review"},
        "decrypt gains a PK_ERR return for a too-short encryption header"),
    "15-cve-2015-7697.patch": (
        "safe", {"UZbunzip2": "safe"},
        "infinite-loop fix: an early `return 2` on empty input; UZbunzip2 already returned 2"),
    "16-fix-integer-underflow-csiz-decrypted.patch": (
        "review", {"extract_or_test_entrylist": "review"},
        "the underflow check returns PK_ERR from a function that never returned it"),
    "18-cve-2014-9913-unzip-buffer-overflow.patch": (
        "safe", {"list_files": "safe"},
        "the overflowing sprintf into the local methbuf gets a bounded format: only the "
        "frame is written"),
    "19-cve-2016-9844-zipinfo-buffer-overflow.patch": (
        "safe", {"zi_short": "safe"},
        "same fix in zipinfo (local methbuf)"),
    "20-cve-2018-1000035-unzip-buffer-overflow.patch": (
        "safe", {"UzpPassword": "safe"},
        "a length check (new locals only) before the prompt is built; no new write or value"),
    "22-cve-2019-13232-fix-bug-in-undefer-input.patch": (
        "review", {"undefer_input": "review"},
        "changed-write: clamps G.csize to 0 where the old code only ever added G.incnt to it; "
        "a new value in global state other code reads"),
    "23-cve-2019-13232-zip-bomb-with-overlapped-entries.patch": (
        "unsupported", {"extract_or_test_files": "review", "free_G_buffers": "review"},
        "adds `cover` to struct Globals: live objects keep the old layout (and the changed "
        "functions write the new field and return the new PK_BOMB)"),
    "24-cve-2019-13232-do-not-raise-alert-for-misplaced-central-directory.patch": (
        "unsupported", {"find_ecrec": "review"},
        "adds fields to struct end_central_dir_record (ecdir_rec)"),
    "25-cve-2019-13232-fix-bug-in-uzbunzip2.patch": (
        "review", {"UZbunzip2": "review"},
        "changed-write: G.incnt is recomputed by a different formula; the input-buffer "
        "bookkeeping other functions read changes"),
}


def _fetch() -> tuple[Path, Path]:
    d = CACHE / "unzip"
    orig = next(iter(d.glob("unzip_6.0.orig.tar.gz")), None) if d.exists() else None
    deb = next(iter(sorted(d.glob("unzip_6.0-28*.debian.tar.xz"))), None) if d.exists() else None
    if orig is None or deb is None:
        if shutil.which("apt-get") is None:
            pytest.skip("apt-get not available")
        d.mkdir(parents=True, exist_ok=True)
        # the .dsc may 404 on a mirror while the tarballs download: check for the files
        subprocess.run(["apt-get", "source", "--download-only", "unzip"], cwd=d,
                       capture_output=True, timeout=600)
        orig = next(iter(d.glob("unzip_6.0.orig.tar.gz")), None)
        deb = next(iter(sorted(d.glob("unzip_6.0-28*.debian.tar.xz"))), None)
        if orig is None or deb is None:
            pytest.skip("cannot fetch Debian unzip sources (add deb-src for bookworm)")
    return orig, deb


@pytest.fixture(scope="module")
def unzip_series(tmp_path_factory) -> list[tuple[str, Path, Path]]:
    """[(patch name, tree before it, patch file)], trees made by applying the series."""
    orig, deb = _fetch()
    root = tmp_path_factory.mktemp("unzip")
    with tarfile.open(orig) as t:
        t.extractall(root)
    with tarfile.open(deb) as t:
        t.extractall(root)
    src = root / "unzip60"
    patches = root / "debian" / "patches"
    series = [ln.split()[0] for ln in (patches / "series").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    out = []
    for name in series:
        if name in EXPECT:
            snap = root / f"before-{name}"
            shutil.copytree(src, snap, symlinks=True)
            out.append((name, snap, patches / name))
        subprocess.run(["patch", "-p1", "--batch", "-s", "-i", str(patches / name)], cwd=src,
                       check=True, capture_output=True)
    return out


def test_unzip_security_patches(unzip_series) -> None:
    assert {n for n, _, _ in unzip_series} == set(EXPECT)
    problems = []
    for name, tree, patch in unzip_series:
        verdict, per_function, why = EXPECT[name]
        report = analyze_tree(tree, patch, cflags=FLAGS)
        got = {f.name: f.verdict.value for f in report.functions}
        if report.verdict.value != verdict or any(
            got.get(fn) != v for fn, v in per_function.items()
        ):
            problems.append(f"{name}: expected {verdict} {per_function} ({why})\n"
                            f"{report.to_text()}")
    assert not problems, "\n".join(problems)


GIFLIB_EXPECT: dict[str, tuple[str, dict[str, str], str]] = {
    "fix-get-args-segment-violation.patch": (
        "safe", {"GAGetParmeters": "safe"},
        "an early `return CMD_ERR_NumRead` at the end of argv; the value and the store to "
        "GAErrorToken were already there"),
    "CVE-2026-23868.patch": (
        "review", {"GifMakeSavedImage": "review"},
        "changed-write: nulls sp->RasterBits (caller-visible SavedImages) before allocating; "
        "the old code only stored a copy or a fresh buffer there"),
    "CVE-2026-26740.patch": (
        "safe", {"EGifGCBToSavedExtension": "safe"},
        "`if (ep->ByteCount < 4) return GIF_ERROR;`: GIF_ERROR was already returned"),
}


def test_giflib_security_patches(tmp_path: Path) -> None:
    d = CACHE / "giflib"
    orig = next(iter(sorted(d.glob("giflib_5.2.1.orig.tar.gz"))), None) if d.exists() else None
    deb = next(iter(sorted(d.glob("giflib_5.2.1-*.debian.tar.xz"))), None) if d.exists() else None
    if orig is None or deb is None:
        if shutil.which("apt-get") is None:
            pytest.skip("apt-get not available")
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "source", "--download-only", "giflib"], cwd=d,
                       capture_output=True, timeout=600)
        orig = next(iter(sorted(d.glob("giflib_5.2.1.orig.tar.gz"))), None)
        deb = next(iter(sorted(d.glob("giflib_5.2.1-*.debian.tar.xz"))), None)
        if orig is None or deb is None:
            pytest.skip("cannot fetch Debian giflib sources (add deb-src for bookworm)")
    for tb in (orig, deb):
        with tarfile.open(tb) as t:
            t.extractall(tmp_path)
    src = tmp_path / "giflib-5.2.1"
    patches = tmp_path / "debian" / "patches"
    series = [ln.split()[0] for ln in (patches / "series").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    if not set(GIFLIB_EXPECT) <= set(series):
        pytest.skip(f"this giflib's series lacks {sorted(set(GIFLIB_EXPECT) - set(series))}")
    problems = []
    for name in series:
        if name in GIFLIB_EXPECT:
            verdict, per_function, why = GIFLIB_EXPECT[name]
            report = analyze_tree(src, patches / name, cflags=["-I."])
            got = {f.name: f.verdict.value for f in report.functions}
            if report.verdict.value != verdict or any(
                got.get(fn) != v for fn, v in per_function.items()
            ):
                problems.append(f"{name}: expected {verdict} {per_function} ({why})\n"
                                f"{report.to_text()}")
        subprocess.run(["patch", "-p1", "--batch", "-s", "-i", str(patches / name)], cwd=src,
                       check=True, capture_output=True)
    assert not problems, "\n".join(problems)


# CVE-2022-37434 (zlib inflate(), gzip header extra field): Debian 12's zlib 1.2.13 carries
# the fix; the vulnerable code is 1.2.12's. The old tree is 1.2.13 with the fix reverted.
ZLIB_FIXED = """\
                    if (state->head != Z_NULL &&
                        state->head->extra != Z_NULL &&
                        (len = state->head->extra_len - state->length) <
                            state->head->extra_max) {
                        zmemcpy(state->head->extra + len, next,
"""
ZLIB_VULNERABLE = """\
                    if (state->head != Z_NULL &&
                        state->head->extra != Z_NULL) {
                        len = state->head->extra_len - state->length;
                        zmemcpy(state->head->extra + len, next,
"""


def test_zlib_cve_2022_37434(tmp_path: Path) -> None:
    """The fix only moves the length computation into the condition that guards the copy:
    the same memcpy into state->head->extra, no new value returned: safe."""
    d = CACHE / "zlib"
    orig = next(iter(sorted(d.glob("zlib_1.2.13*.orig.tar.*"))), None) if d.exists() else None
    if orig is None:
        if shutil.which("apt-get") is None:
            pytest.skip("apt-get not available")
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "source", "--download-only", "zlib"], cwd=d,
                       capture_output=True, timeout=600)
        orig = next(iter(sorted(d.glob("zlib_1.2.13*.orig.tar.*"))), None)
        if orig is None:
            pytest.skip("cannot fetch Debian zlib sources (add deb-src for bookworm)")
    with tarfile.open(orig) as t:
        t.extractall(tmp_path)
    [src] = [p for p in tmp_path.iterdir() if p.is_dir()]
    fixed = (src / "inflate.c").read_text()
    assert ZLIB_FIXED in fixed
    (src / "inflate.c").write_text(fixed.replace(ZLIB_FIXED, ZLIB_VULNERABLE))
    patched = tmp_path / "new"
    patched.mkdir()
    (patched / "inflate.c").write_text(fixed)
    diff = subprocess.run(["diff", "-u", "--label", "a/inflate.c", "--label", "b/inflate.c",
                           str(src / "inflate.c"), str(patched / "inflate.c")],
                          capture_output=True, text=True).stdout
    assert diff
    (tmp_path / "fix.diff").write_text(diff)
    report = analyze_tree(src, tmp_path / "fix.diff", cflags=["-I."])
    assert [(f.name, f.status) for f in report.functions] == [("inflate", "changed")]
    assert report.verdict.value == "safe", report.to_text()
