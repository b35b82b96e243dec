"""`python -m opus_bpf.agent`: run the agent (the same as `opus-bpf serve`)."""

from __future__ import annotations

import sys

from opus_bpf.agent.options import add_serve_arguments, run


def main(argv: list[str] | None = None) -> int:
    return run(add_serve_arguments().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
