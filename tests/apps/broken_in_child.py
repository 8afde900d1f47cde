"""An app whose module cannot be imported in a child process (to test boot errors)."""
from __future__ import annotations

import multiprocessing

from greenq import App

app = App("broken")

if multiprocessing.parent_process() is not None:
    raise RuntimeError("this module refuses to load in a child process")


@app.task
def noop():
    return None
