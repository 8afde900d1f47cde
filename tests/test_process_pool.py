"""The process pool used by -P prefork and --cpu-pool, driven directly (no broker).

Results go to the embedded store of a private data directory.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from greenq import states
from greenq.exceptions import ConfigurationError, PoolError, TaskRevokedError, Terminated
from greenq.execute import Tracer
from greenq.pools.prefork import ProcessPool
from greenq.protocol import Request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(tmp_path):
    from tests.apps.mixed import app
    app.close()
    app.conf.embedded_home = str(tmp_path / "home")   # children get the settings changed in code
    yield app
    app.close()


class Outcomes:
    def __init__(self):
        self.items = []
        self.arrived = threading.Event()

    def __call__(self, outcome):
        self.items.append(outcome)
        self.arrived.set()

    def wait(self, count=1, timeout=20.0):
        deadline = time.monotonic() + timeout
        while len(self.items) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.items) >= count, f"only {len(self.items)} outcomes after {timeout}s"
        return self.items


def request_for(app, name, *args, **fields):
    task = app.tasks[f"tests.apps.mixed.{name}"]
    return Request(id=str(uuid.uuid4()), name=task.name, args=list(args), kwargs={}, task=task,
                   hostname="test@host", delivery_info={"routing_key": "celery"}, **fields)


def wait_free(pool, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while pool.free_count() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return pool.free_count()


def test_revoke_terminate_kills_the_child_and_stores_revoked(app):
    pool = ProcessPool(app, 1)
    pool.start()
    try:
        outcomes = Outcomes()
        request = request_for(app, "sleep", 30)
        job = pool.submit(request, Tracer(app, None, "test@host"), outcomes)
        assert pool.free_count() == 1 and pool.active == 1   # one more may wait in the child's pipe
        assert request.worker_pid == job.child.pid
        time.sleep(0.3)
        assert pool.kill(job, Terminated)
        assert not pool.kill(job, Terminated)          # once
        [outcome] = outcomes.wait()
        assert outcome.state == states.REVOKED
        with pytest.raises(TaskRevokedError):
            app.AsyncResult(request.id).get(timeout=5)
        assert wait_free(pool, 2) == 2                  # replaced
        assert pool.info()["replaced"] == 1
    finally:
        pool.stop()


def test_outcomes_come_back_with_the_childs_report(app):
    pool = ProcessPool(app, 2)
    pool.start()
    try:
        outcomes = Outcomes()
        tracer = Tracer(app, None, "test@host")
        ok, bad = request_for(app, "add", 2, 3), request_for(app, "die", "exit")
        pool.submit(ok, tracer, outcomes)
        pool.submit(bad, tracer, outcomes)
        by_id = {o.request.id: o for o in outcomes.wait(2)}
        assert (by_id[ok.id].state, repr(by_id[ok.id].retval), by_id[ok.id].action) == ("SUCCESS", "5", "ack")
        assert app.AsyncResult(ok.id).get(timeout=5) == 5           # stored by the child
        assert by_id[bad.id].state == "FAILURE"
        assert "WorkerLostError" in repr(by_id[bad.id].exc)
        assert pool.join(10)
    finally:
        pool.stop()


def test_grow_and_shrink(app):
    pool = ProcessPool(app, 1)
    pool.start()
    try:
        assert pool.grow(1) == 2
        assert wait_free(pool, 4) == 4   # two children, each idle with room for one more
        assert len(pool.info()["processes"]) == 2
        assert pool.shrink(1) == 1
        assert len(pool.info()["processes"]) == 1 and pool.free_count() == 2
    finally:
        pool.stop()


def test_submit_beyond_free_count_is_an_error(app):
    pool = ProcessPool(app, 1, prefetch=0)
    pool.start()
    try:
        tracer = Tracer(app, None, "test@host")
        pool.submit(request_for(app, "sleep", 0.5), tracer, Outcomes())
        assert pool.free_count() == 0
        with pytest.raises(PoolError, match="check free_count"):
            pool.submit(request_for(app, "add", 1, 1), tracer, Outcomes())
    finally:
        pool.stop()


def test_a_request_queued_behind_a_crash_is_requeued_not_failed(app):
    pool = ProcessPool(app, 1)   # prefetch 1: the second request waits in the child's pipe
    pool.start()
    try:
        outcomes, tracer = Outcomes(), Tracer(app, None, "test@host")
        crash, queued = request_for(app, "die"), request_for(app, "add", 1, 1)
        pool.submit(crash, tracer, outcomes)
        pool.submit(queued, tracer, outcomes)
        by_id = {o.request.id: o for o in outcomes.wait(2)}
        assert by_id[crash.id].state == "FAILURE"
        assert (by_id[queued.id].state, by_id[queued.id].action) == ("REJECTED", "requeue")
        assert app.AsyncResult(queued.id).state == "PENDING"   # it never ran
    finally:
        pool.stop()


def test_revoking_a_queued_request_does_not_touch_the_running_one(app):
    pool = ProcessPool(app, 1)
    pool.start()
    try:
        outcomes, tracer = Outcomes(), Tracer(app, None, "test@host")
        running, queued = request_for(app, "sleep", 0.5), request_for(app, "sleep", 30)
        pool.submit(running, tracer, outcomes)
        job = pool.submit(queued, tracer, outcomes)
        assert pool.kill(job, Terminated)
        by_id = {o.request.id: o for o in outcomes.wait(2)}
        assert by_id[running.id].state == "SUCCESS"
        assert by_id[queued.id].state == "REVOKED"
    finally:
        pool.stop()


def test_max_tasks_per_child_limits_what_is_sent_ahead(app):
    pool = ProcessPool(app, 1, max_tasks_per_child=1)
    pool.start()
    try:
        outcomes, tracer = Outcomes(), Tracer(app, None, "test@host")
        pool.submit(request_for(app, "pid"), tracer, outcomes)
        assert pool.free_count() == 0   # this child runs one task in its life
        first = outcomes.wait(1)[0]
        assert wait_free(pool, 1) == 1
        pool.submit(request_for(app, "pid"), tracer, outcomes)
        second = outcomes.wait(2)[1]
        assert first.request.worker_pid != second.request.worker_pid
    finally:
        pool.stop()


def test_a_child_that_cannot_import_the_app_fails_start_with_its_traceback(tmp_path):
    from tests.apps.broken_in_child import app
    pool = ProcessPool(app, 1)
    started = time.monotonic()
    with pytest.raises(PoolError, match="refuses to load in a child process"):
        pool.start(timeout=30)
    assert time.monotonic() - started < 15


def test_fork_is_refused(app):
    with pytest.raises(ConfigurationError, match="spawn, forkserver"):
        ProcessPool(app, 1, start_method="fork")
