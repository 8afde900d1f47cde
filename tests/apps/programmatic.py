"""A worker started from a script with ``app.worker_main`` (the celery#8168 scenario).

Run as a script: ``python tests/apps/programmatic.py -P gevent``.  Only
greenq's light public surface is imported before worker_main patches.
With ``--import-first ssl,requests`` those modules are imported before, and
the worker must refuse to start.
"""
from __future__ import annotations

import importlib
import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--import-first" in argv:
        index = argv.index("--import-first")
        for name in argv[index + 1].split(","):
            importlib.import_module(name)
        del argv[index:index + 2]
    from tests.apps.scenarios import app
    app.worker_main(["worker", *argv])
