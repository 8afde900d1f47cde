"""Tasks for the remote-control tests, on tests.apps.basic's app."""
from __future__ import annotations

import time

from tests.apps.basic import app  # noqa: F401  (-A tests.apps.control finds it)
from tests.apps.limits import _spin
from tests.apps.scenarios import _mark


@app.task
def nap(name, seconds):
    """Sleeps cooperatively; marks when it starts."""
    _mark(f"{name}.started", repr(time.time()))
    time.sleep(seconds)
    _mark(f"{name}.done")
    return seconds


@app.task
def spin_for(name, seconds):
    """Holds the hub (never yields) for `seconds`, no time limit."""
    _mark(f"{name}.started", repr(time.time()))
    return _spin(seconds)
