"""A worker on every broker and pool: states, timing, expiry, retries, results.

One worker per (broker, pool) serves every test in this module.
"""
from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timedelta, timezone

import pytest

from greenq import states
from greenq.exceptions import TaskRevokedError
from tests.apps.scenarios import CustomError
from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, redis_client, wait_until
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

HAS_EVENTLET = importlib.util.find_spec("eventlet") is not None


class Running:
    def __init__(self, kind, pool, proc, app, home, queue):
        self.kind, self.pool, self.proc, self.app, self.home, self.queue = kind, pool, proc, app, home, queue
        self.marks = Marks(os.path.join(home, "marks"))

    def send(self, name, args=(), **options):
        return self.app.send_task(f"tests.apps.{name}", args, **options)


@pytest.fixture(scope="class")
def running(request, tmp_path_factory):
    """One worker for every test of a class; the class names the broker and pool."""
    kind, pool = request.cls.kind, request.cls.pool
    if pool == "eventlet" and not HAS_EVENTLET:
        pytest.skip("eventlet is not installed (pip install 'greenq[eventlet]')")
    broker_url, backend_url = broker_urls(kind)
    home = str(tmp_path_factory.mktemp(f"{kind}-{pool}"))
    queue = unique("q")
    with worker("tests.apps.scenarios", broker=broker_url, backend=backend_url, pool=pool, concurrency=4,
                queue=queue, home=home) as proc:
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            yield Running(kind, pool, proc, app, home, queue)
        finally:
            app.close()
    if kind != "embedded":
        drop_queue(broker_url, queue)


class WorkerScenarios:
    """Every test here runs once per subclass below (one broker, one pool)."""

    kind = "embedded"
    pool = "threads"

    def test_success_and_what_the_task_sees(self, running):
        assert running.send("basic.add", (2, 3)).get(timeout=20) == 5
        seen = running.send("basic.whoami").get(timeout=20)
        assert seen["retries"] == 0 and seen["is_eager"] is False
        assert seen["routing_key"] == running.queue
        assert seen["hostname"].startswith("greenq@")


    def test_failure_comes_back_as_the_tasks_exception(self, running):
        result = running.send("scenarios.fail_custom", ("card declined",))
        with pytest.raises(CustomError, match="card declined"):
            result.get(timeout=20)
        assert result.state == states.FAILURE
        assert "CustomError: card declined" in result.traceback
        running.proc.wait_for_log(rf"task tests.apps.scenarios.fail_custom\[{result.id}\] raised")


    def test_track_started_shows_started_while_running(self, running):
        gate = unique("gate")
        result = running.send("scenarios.gated", (gate,))
        wait_until(lambda: running.marks.exists(f"{gate}.started"), message="the task to start")
        assert wait_until(lambda: result.state == states.STARTED, timeout=5, message="STARTED to be stored")
        running.marks.set(f"{gate}.go")
        assert result.get(timeout=20) == gate
        assert result.state == states.SUCCESS


    @pytest.mark.parametrize("how", ["countdown", "eta"])
    def test_countdown_and_eta_wait_until_due(self, running, how):
        sent = datetime.now(timezone.utc)
        options = {"countdown": 1.0} if how == "countdown" else {"eta": sent + timedelta(seconds=1.0)}
        result = running.send("scenarios.counted", (unique("c"), "due"), **options)
        assert result.state == states.PENDING
        assert result.get(timeout=20) == "due"
        done = datetime.fromisoformat(result.date_done)
        assert (done - sent).total_seconds() >= 0.95, "ran before it was due"


    def test_expired_task_is_skipped_and_stored_as_revoked(self, running):
        name = unique("expired")
        result = running.send("scenarios.counted", (name, "never"), expires=datetime.now(timezone.utc) - timedelta(1))
        with pytest.raises(TaskRevokedError):
            result.get(timeout=20)
        assert result.state == states.REVOKED
        running.proc.wait_for_log(rf"\[{result.id}\] expired: skipped")
        assert running.marks.count(f"{name}.runs") == 0


    def test_a_task_that_expires_while_waiting_for_its_eta_is_revoked(self, running):
        name = unique("expires-while-held")
        result = running.send("scenarios.counted", (name, "never"), countdown=1.0, expires=0.3)
        with pytest.raises(TaskRevokedError):
            result.get(timeout=20)
        assert running.marks.count(f"{name}.runs") == 0


    def test_retry_republishes_with_the_same_id_until_it_succeeds(self, running):
        result = running.send("basic.retry_until", (2,))
        assert result.get(timeout=20) == 2
        log = running.proc.log
        assert log.count(f"tests.apps.basic.retry_until[{result.id}] retry") == 2


    def test_retries_exhausted_fail_with_the_last_exception(self, running):
        result = running.send("scenarios.retry_forever")
        with pytest.raises(ConnectionError, match="attempt 2"):
            result.get(timeout=20)
        assert running.proc.log.count(f"retry_forever[{result.id}] retry") == 2


    @pytest.mark.parametrize("mode", ["countdown", "eta"])
    def test_a_retry_waits_for_its_countdown_or_eta_with_state_retry(self, running, mode):
        name = unique("timed")
        result = running.send("scenarios.retry_timed", (name, mode))
        wait_until(lambda: result.state == states.RETRY, timeout=20, message="state RETRY while it waits")
        assert result.get(timeout=30) == 2
        with open(os.path.join(running.marks.path, f"{name}.attempts")) as f:
            starts = [float(line) for line in f if line.strip()]
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert len(starts) == 3
        assert all(0.95 <= gap < 2.5 for gap in gaps), f"attempts {gaps} apart, asked for 1 s"

    def test_retry_without_an_exception_ends_in_max_retries_exceeded(self, running):
        from greenq.exceptions import MaxRetriesExceededError
        result = running.send("scenarios.retry_without_exc")
        with pytest.raises(MaxRetriesExceededError):
            result.get(timeout=20)

    def test_autoretry_with_backoff(self, running):
        result = running.send("scenarios.autoretry", (2,))
        assert result.get(timeout=20) == {"retries": 2, "id": result.id}


    def test_ignore_result_stores_nothing(self, running):
        name = unique("quiet")
        result = running.send("scenarios.quiet", (name,))
        wait_until(lambda: running.marks.exists(f"{name}.done"), message="the task to run")
        assert running.send("basic.add", (1, 1)).get(timeout=20) == 2  # the worker has moved on
        assert result.state == states.PENDING


    def test_many_tasks_at_once_none_lost(self, running):
        results = [running.send("basic.add", (i, 1)) for i in range(100)]
        from greenq.result import ResultSet
        assert ResultSet(results, app=running.app).join(timeout=40) == [i + 1 for i in range(100)]


class RedisResults:
    """Checks of the Redis result layout, for the Redis classes only."""

    def test_results_on_redis_expire_after_result_expires(self, running):
        result = running.send("basic.add", (1, 2))
        assert result.get(timeout=20) == 3
        client = redis_client()
        try:
            ttl = client.ttl(f"celery-task-meta-{result.id}")
        finally:
            client.close()
        assert 3500 < ttl <= 3600  # tests.apps.basic sets result_expires=3600


class TestEmbeddedThreads(WorkerScenarios):
    kind, pool = "embedded", "threads"


class TestEmbeddedSolo(WorkerScenarios):
    kind, pool = "embedded", "solo"


class TestEmbeddedGevent(WorkerScenarios):
    kind, pool = "embedded", "gevent"


class TestEmbeddedEventlet(WorkerScenarios):
    kind, pool = "embedded", "eventlet"


class TestRedisThreads(WorkerScenarios, RedisResults):
    kind, pool = "redis", "threads"


class TestRedisSolo(WorkerScenarios, RedisResults):
    kind, pool = "redis", "solo"


class TestRedisGevent(WorkerScenarios, RedisResults):
    kind, pool = "redis", "gevent"


class TestRedisEventlet(WorkerScenarios, RedisResults):
    kind, pool = "redis", "eventlet"


class TestAmqpThreads(WorkerScenarios):
    kind, pool = "amqp", "threads"


class TestAmqpSolo(WorkerScenarios):
    kind, pool = "amqp", "solo"


class TestAmqpGevent(WorkerScenarios):
    kind, pool = "amqp", "gevent"


class TestAmqpEventlet(WorkerScenarios):
    kind, pool = "amqp", "eventlet"
