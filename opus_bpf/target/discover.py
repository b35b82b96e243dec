"""Which running processes map a given ELF file (by build-id): the targets of `--exe`/`--lib`.

An nginx master and its workers, or every process linked to a patched libexpat, are found by the
build-id of what they actually map, not by name: a process still running an older, replaced
copy of the file is not a match.
"""

from __future__ import annotations

import os

from opus_bpf.target.elf import load_elf
from opus_bpf.target.process import read_maps


def pids_mapping(build_id: str, path: str | None = None, exe_only: bool = False) -> list[int]:
    """Pids of processes whose executable (or, unless exe_only, any mapped file) has build_id."""
    want_path = os.path.realpath(path) if path else None
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            if exe_only:
                candidates = [os.readlink(f"/proc/{pid}/exe")]
            else:
                candidates = sorted(
                    {m.path for m in read_maps(pid) if m.path.startswith("/") and m.inode}
                )
        except OSError:
            continue  # kernel threads, exited processes
        except Exception:  # noqa: BLE001 - a process that vanished between listing and reading
            continue
        for cand in candidates:
            if (
                want_path
                and os.path.realpath(cand) != want_path
                and not cand.endswith(" (deleted)")
            ):
                continue
            try:
                via = f"/proc/{pid}/root{cand}"
                img = load_elf(via if os.path.exists(via) else cand, need_symtab=False)
            except Exception:  # noqa: BLE001 - not an ELF file (locale archive, fonts...)
                continue
            if img.build_id == build_id:
                out.append(pid)
                break
    return sorted(out)
