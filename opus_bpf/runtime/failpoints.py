"""Named points where a test can stop opus-bpf and kill it: "killed at any instant" made exact.

`OPUS_BPF_FAILPOINT=name` makes the process stop itself (SIGSTOP) when it reaches that point, so
a test can SIGKILL it there and check that the target runs on, whole. Unset (always, outside
tests), a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_WANTED = os.environ.get("OPUS_BPF_FAILPOINT")


def failpoint(name: str) -> None:
    if _WANTED is not None and name == _WANTED:
        os.kill(os.getpid(), signal.SIGSTOP)
