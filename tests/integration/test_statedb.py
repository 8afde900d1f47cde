"""A worker started with --statedb skips what was revoked before it restarted."""
from __future__ import annotations

import os
import uuid

import pytest

from greenq import states
from greenq.state import StateDB, WorkerState
from tests.integration.helpers import drop_queue, wait_until
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.mark.parametrize("kind", ["redis", "embedded"])
def test_a_revoke_saved_in_the_state_db_is_honoured_after_a_restart(tmp_path, kind):
    broker, backend = broker_urls(kind)
    queue, home = unique("q"), str(tmp_path / "home")
    path = str(tmp_path / "worker.state")
    revoked_id = str(uuid.uuid4())
    # the previous run of this worker saved one revoked id (a revoke command it received)
    state = WorkerState()
    state.revoked.add(revoked_id)
    StateDB(path).save(state)
    app = client_app(broker, backend, queue=queue, home=home)
    try:
        with worker("tests.apps.basic", broker=broker, backend=backend, queue=queue, home=home,
                    args=("--statedb", path)) as proc:
            proc.wait_for_log("1 revoked id\\(s\\) loaded")
            skipped = app.send_task("tests.apps.basic.add", (1, 1), task_id=revoked_id)
            ran = app.send_task("tests.apps.basic.add", (2, 2))
            assert ran.get(timeout=20) == 4
            wait_until(lambda: skipped.state == states.REVOKED, timeout=20, message="REVOKED stored")
        # and the file is still there, with the id, after this run's shutdown
        again = WorkerState()
        assert StateDB(path).load(again) == 1 and again.is_revoked(revoked_id)
        assert os.path.exists(path)
    finally:
        app.close()
        if kind != "embedded":
            drop_queue(broker, queue)
