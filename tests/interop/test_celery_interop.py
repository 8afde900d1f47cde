"""Stock Celery as the oracle: Celery clients use greenq workers, greenq clients use Celery workers."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.helpers import drop_queue
from tests.support import ROOT, WorkerProcess, broker_urls, client_app, unique, worker

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["redis", "amqp"])
def server(request):
    return (request.param, *broker_urls(request.param))


@pytest.fixture
def queue(server):
    name = unique("q")
    yield name
    drop_queue(server[1], name)


@pytest.fixture
def celery_client(server):
    from celery import Celery
    kind, broker_url, backend_url = server
    app = Celery("celery_client", broker=broker_url, backend=backend_url)
    app.conf.control_exchange = os.environ.get("GREENQ_TEST_CONTROL_EXCHANGE", "celery")
    yield app
    app.close()


@pytest.mark.parametrize("pool", ["gevent", "threads"])
def test_a_celery_client_uses_a_greenq_worker(server, pool, queue, home, celery_client):
    from celery.exceptions import TaskRevokedError
    kind, broker_url, backend_url = server
    with worker(broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home):
        send = celery_client.send_task
        assert send("tests.apps.basic.add", (2, 2), queue=queue).get(timeout=20) == 4
        seen = send("tests.apps.basic.whoami", queue=queue).get(timeout=20)
        assert seen["routing_key"] == queue and seen["retries"] == 0

        failed = send("tests.apps.basic.fail", ("from greenq",), queue=queue)
        with pytest.raises(ValueError, match="from greenq"):
            failed.get(timeout=20)
        assert failed.state == "FAILURE" and "ValueError" in failed.traceback

        later = send("tests.apps.basic.add", (1, 2), queue=queue, countdown=0.5)
        assert later.get(timeout=20) == 3

        expired = send("tests.apps.basic.add", (1, 2), queue=queue,
                       expires=datetime.now(timezone.utc) - timedelta(seconds=5))
        with pytest.raises(TaskRevokedError):
            expired.get(timeout=20)

        retried = send("tests.apps.basic.retry_until", (2,), queue=queue)
        assert retried.get(timeout=20) == 2

        many = [send("tests.apps.basic.add", (i, i), queue=queue) for i in range(50)]
        assert [r.get(timeout=30) for r in many] == [2 * i for i in range(50)]


def celery_worker(broker_url, backend_url, queue, home):
    env = {**os.environ, "GREENQ_BROKER_URL": broker_url, "GREENQ_RESULT_BACKEND": backend_url,
           "GREENQ_TEST_QUEUE": queue, "GREENQ_HOME": home, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "celery", "-A", "tests.apps.celery_app", "worker", "-P", "solo", "-Q", queue,
            "-n", f"{queue}@%h", "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return WorkerProcess(argv, env)


def test_a_greenq_client_uses_a_stock_celery_worker(server, queue, home):
    kind, broker_url, backend_url = server
    proc = celery_worker(broker_url, backend_url, queue, home)
    app = client_app(broker_url, backend_url, queue=queue, home=home)
    try:
        proc.wait_for_log(r"ready\.", timeout=30)
        assert app.send_task("tests.apps.basic.add", (20, 22)).get(timeout=20) == 42
        seen = app.send_task("tests.apps.basic.whoami").get(timeout=20)
        assert seen["routing_key"] == queue and seen["is_eager"] is False

        failed = app.send_task("tests.apps.basic.fail", ("from celery",))
        with pytest.raises(ValueError, match="from celery"):
            failed.get(timeout=20)
        assert failed.state == "FAILURE"

        later = app.send_task("tests.apps.basic.add", (1, 2), countdown=0.5)
        assert later.get(timeout=20) == 3
        # it really was Celery that ran them
        proc.wait_for_log(rf"Task tests.apps.basic.add\[{later.id}\] succeeded", timeout=5)
    finally:
        app.close()
        proc.stop(timeout=30)
