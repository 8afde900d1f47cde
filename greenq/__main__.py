"""``greenq`` and ``python -m greenq``: patch the process first, then run the CLI.

Only the standard library and click are imported before the process is
monkey-patched for ``-P gevent``/``-P eventlet``; the user's app, kombu and
ssl come after.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from greenq.cli import run_cli
    run_cli(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
