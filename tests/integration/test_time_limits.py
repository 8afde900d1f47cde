"""Time limits on every pool, and what a green worker does about code that never yields.

Each test starts its own worker (Redis): the pools differ in how a limit
reaches the task (see docs/time-limits.md).
"""
from __future__ import annotations

import importlib.util
import os
import time
from datetime import datetime

import pytest

from greenq import states
from greenq.exceptions import TimeLimitExceeded
from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, wait_until
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HAS_EVENTLET = importlib.util.find_spec("eventlet") is not None
EVENTLET = pytest.param("eventlet", marks=pytest.mark.skipif(not HAS_EVENTLET, reason="no eventlet"))
# threads: a limit is raised at the task's next Python bytecode, so a task
# inside one long blocking call (time.sleep(10) in an OS thread) only sees it
# when the call returns; the threads pool is in the non-yielding test only.
SLEEPING_POOLS = ["gevent", EVENTLET, "solo"]
ALL_POOLS = ["gevent", EVENTLET, "threads", "solo"]


class Session:
    def __init__(self, proc, app, home):
        self.proc, self.app, self.home = proc, app, home
        self.marks = Marks(os.path.join(home, "marks"))

    def send(self, name, *args, **options):
        return self.app.send_task(f"tests.apps.limits.{name}", args, **options)

    def mark_value(self, name):
        wait_until(lambda: self.marks.exists(name), timeout=20, message=f"mark {name}")
        with open(os.path.join(self.marks.path, name)) as f:
            return float(f.readline())


@pytest.fixture
def session(request, tmp_path):
    """A worker on Redis: ``session(pool, concurrency=4, env={...})``."""
    broker, backend = broker_urls("redis")
    queue = unique("q")
    started = []

    def start(pool, concurrency=4, env=None, ready=True):
        home = str(tmp_path / f"{pool}-{len(started)}")
        cm = worker("tests.apps.limits", broker=broker, backend=backend, pool=pool, concurrency=concurrency,
                    queue=queue, home=home, env=env, ready=ready)
        proc = cm.__enter__()
        app = client_app(broker, backend, queue=queue, home=home)
        started.append((cm, app))
        return Session(proc, app, home)

    yield start
    for cm, app in reversed(started):
        app.close()
        cm.__exit__(None, None, None)
    drop_queue(broker, queue)


def finished_at(result) -> float:
    return datetime.fromisoformat(result.date_done).timestamp()


def test_a_loop_that_never_yields_ends_at_its_hard_limit_while_io_tasks_go_on(session):
    s = session("gevent", concurrency=1000)
    name = unique("spin")
    spinning = s.send("spin", name)
    started = s.mark_value(f"{name}.started")
    io = [s.send("io", 0.2) for _ in range(1000)]
    with pytest.raises(TimeLimitExceeded):
        spinning.get(timeout=30)
    assert spinning.state == states.FAILURE
    assert finished_at(spinning) - started < 2.5, "the 2 s hard limit stopped a non-yielding loop too late"
    assert [r.get(timeout=60) for r in io] == [0.2] * 1000
    assert "hard time limit passed while it held the hub" in s.proc.log


@pytest.mark.parametrize("pool", SLEEPING_POOLS)
def test_soft_limit_is_catchable_then_the_hard_limit_ends_a_sleeping_task(session, pool):
    s = session(pool)
    name = unique("soft")
    result = s.send("sleep_soft", name)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    soft_after = s.mark_value(f"{name}.soft")
    assert 0.4 <= soft_after < 1.9, f"soft limit (0.5 s) raised after {soft_after:.2f}s"
    started = s.mark_value(f"{name}.started")
    assert 1.9 <= finished_at(result) - started < 3.5, "hard limit (2 s) at the wrong time"
    assert s.send("io", 0.01).get(timeout=20) == 0.01, "the worker stopped serving after the limits"


@pytest.mark.parametrize("pool", ALL_POOLS)
def test_soft_then_hard_limit_reach_a_loop_that_never_yields(session, pool):
    s = session(pool)
    name = unique("spinsoft")
    result = s.send("spin_soft", name)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    soft_after = s.mark_value(f"{name}.soft")
    assert 0.9 <= soft_after < 1.6, f"soft limit (1 s) raised after {soft_after:.2f}s"
    started = s.mark_value(f"{name}.started")
    assert 2.9 <= finished_at(result) - started < 3.6, "hard limit (3 s) at the wrong time"
    assert s.send("io", 0.01).get(timeout=20) == 0.01


def test_a_task_holding_the_hub_is_reported_once_with_its_name_id_and_stack(session):
    s = session("gevent", env={"GREENQ_TEST_BLOCKING_THRESHOLD": "0.5"})
    blocking = s.send("block", 1.5)
    assert blocking.get(timeout=20) == 1.5
    assert [s.send("io", 0.05).get(timeout=20) for _ in range(5)] == [0.05] * 5
    wait_until(lambda: "the hub has been blocked" in s.proc.log, timeout=10)
    time.sleep(0.5)
    log = s.proc.log
    assert log.count("the hub has been blocked") == 1
    assert f"tests.apps.limits.block[{blocking.id}]" in log
    assert "unpatched_sleep" in log  # the stack names the call that blocks


def test_no_blocking_report_when_the_threshold_is_off(session):
    s = session("gevent", env={"GREENQ_TEST_BLOCKING_THRESHOLD": "0"})
    assert s.send("block", 1.5).get(timeout=20) == 1.5
    assert s.send("io", 0.05).get(timeout=20) == 0.05
    assert "the hub has been blocked" not in s.proc.log


def test_a_task_stuck_in_a_blocking_call_past_its_hard_limit_recycles_the_worker(session):
    s = session("gevent", env={"GREENQ_TEST_STUCK_EXIT_AFTER": "1", "GREENQ_TEST_BLOCKING_THRESHOLD": "0.5"})
    name = unique("stuck")
    result = s.send("stuck", name)
    s.mark_value(f"{name}.started")
    assert s.proc.proc.wait(timeout=20) == 70
    assert "is stuck past its hard time limit" in s.proc.log
    assert result.state == states.FAILURE
    with pytest.raises(TimeLimitExceeded, match="could not be interrupted"):
        result.get(timeout=5)
