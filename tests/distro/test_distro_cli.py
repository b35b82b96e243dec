"""`build --installed` argument checks: one line, non-zero, nothing run."""

from __future__ import annotations

import pytest

from opus_bpf.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["build", "--installed", "/usr/bin/x", "-o", "x.opus"], "exactly one of --patch"),
    (["build", "--installed", "/usr/bin/x", "--patch", "a", "--debian-patch", "b", "-o", "x"],
     "exactly one of --patch"),
    (["build", "--installed", "/usr/bin/x", "--src", ".", "--patch", "a", "-o", "x"],
     "replaces --src"),
    (["build", "--installed", "/usr/bin/x", "--patch", "a", "--cflags=-O2", "-o", "x"],
     "compile commands from the package"),
    (["build", "--patch", "a", "-o", "x"], "needs --src, --patch and --binary"),
])
def test_argument_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_pending_needs_a_target(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["pending"])
