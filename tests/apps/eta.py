"""ETA tasks for the parking tests, on tests.apps.basic's app.

``GREENQ_TEST_ETA_HORIZON``, ``GREENQ_TEST_ETA_LIMIT`` and
``GREENQ_TEST_PARKING_PREFIX`` set the worker's parking horizon, ETA limit
and parking key prefix (unique per test, so tests share nothing).
"""
from __future__ import annotations

import os
import time

from tests.apps.basic import app
from tests.apps.scenarios import _mark

if "GREENQ_TEST_ETA_HORIZON" in os.environ:
    app.conf.eta_parking_horizon = float(os.environ["GREENQ_TEST_ETA_HORIZON"])
if "GREENQ_TEST_ETA_LIMIT" in os.environ:
    app.conf.worker_eta_task_limit = int(os.environ["GREENQ_TEST_ETA_LIMIT"])
if "GREENQ_TEST_PARKING_PREFIX" in os.environ:
    app.conf.eta_parking_prefix = os.environ["GREENQ_TEST_PARKING_PREFIX"]


@app.task
def stamp(name):
    """Records when it ran (a mark per run, so a second run shows)."""
    now = time.time()
    _mark(name, repr(now))
    return now
