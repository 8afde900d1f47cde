"""Tasks that test time limits and blocking detection, on tests.apps.basic's app.

``GREENQ_TEST_BLOCKING_THRESHOLD`` and ``GREENQ_TEST_STUCK_EXIT_AFTER``
set the worker's blocking-report threshold and stuck-task exit delay.
"""
from __future__ import annotations

import os
import sys
import time

from greenq.exceptions import SoftTimeLimitExceeded
from tests.apps.basic import app  # noqa: F401  (-A tests.apps.limits finds it)
from tests.apps.scenarios import _mark

if "GREENQ_TEST_BLOCKING_THRESHOLD" in os.environ:
    app.conf.worker_blocking_threshold = float(os.environ["GREENQ_TEST_BLOCKING_THRESHOLD"])
if "GREENQ_TEST_STUCK_EXIT_AFTER" in os.environ:
    app.conf.worker_stuck_task_exit_after = float(os.environ["GREENQ_TEST_STUCK_EXIT_AFTER"])


def unpatched_sleep(seconds: float) -> None:
    """time.sleep as the OS does it: holds the whole thread (and a green hub)."""
    if "gevent" in sys.modules:
        from gevent import monkey
        if monkey.is_module_patched("time"):
            return monkey.get_original("time", "sleep")(seconds)
    if "eventlet" in sys.modules:
        from eventlet import patcher
        if patcher.is_monkey_patched("time"):
            return patcher.original("time").sleep(seconds)
    return time.sleep(seconds)


def _spin(cap: float) -> int:
    """A pure-Python loop that never yields; gives up after ``cap`` seconds."""
    x, end = 0, time.monotonic() + cap
    while time.monotonic() < end:
        x += 1
    return x


@app.task(time_limit=2)
def spin(name, cap=30.0):
    """Never yields; the hard limit (2 s) must end it."""
    _mark(f"{name}.started", repr(time.time()))
    _spin(cap)
    return "not stopped"


@app.task(soft_time_limit=1, time_limit=3)
def spin_soft(name, cap=30.0):
    """Never yields; catches the soft limit (records when), then spins into the hard one."""
    started = time.time()
    _mark(f"{name}.started", repr(started))
    try:
        _spin(cap)
    except SoftTimeLimitExceeded:
        _mark(f"{name}.soft", repr(time.time() - started))
    _spin(cap)
    return "not stopped"


@app.task(soft_time_limit=0.5, time_limit=2)
def sleep_soft(name):
    """Yields (sleeps); catches the soft limit, cleans up, then sleeps into the hard one."""
    started = time.time()
    _mark(f"{name}.started", repr(started))
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        _mark(f"{name}.soft", repr(time.time() - started))
    time.sleep(10)
    return "not stopped"


@app.task
def io(seconds):
    time.sleep(seconds)
    return seconds


@app.task
def block(seconds):
    """Holds the thread in one blocking call the green pools cannot patch."""
    unpatched_sleep(seconds)
    return seconds


@app.task(time_limit=1)
def stuck(name, seconds=60.0):
    """Past its hard limit inside a blocking call: only a worker restart ends it."""
    _mark(f"{name}.started", repr(time.time()))
    unpatched_sleep(seconds)
    return "not stopped"
