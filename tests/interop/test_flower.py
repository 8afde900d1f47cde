"""Flower (from PyPI), pointed at the broker of a greenq worker, through its HTTP API:
the worker is listed online, its tasks show, and Flower's revoke and
rate-limit actions take effect."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from greenq import states
from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, wait_until
from tests.support import ROOT, broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port, path, data=None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"Flower {path}: {exc.code} {exc.read()[:500]!r}") from None


@pytest.fixture(params=["redis", "amqp"])
def flower(request, tmp_path):
    pytest.importorskip("flower")
    broker, backend = broker_urls(request.param)
    queue, events, control = unique("q"), unique("ev"), unique("ctl")
    hostname = f"{unique('fl')}@test"
    home = str(tmp_path)
    env = {"GREENQ_TEST_EVENT_EXCHANGE": events, "GREENQ_TEST_CONTROL_EXCHANGE": control}
    port = free_port()
    flower_env = {**os.environ, **env, "GREENQ_BROKER_URL": broker, "GREENQ_RESULT_BACKEND": backend,
                  "GREENQ_TEST_QUEUE": queue, "PYTHONPATH": ROOT, "FLOWER_UNAUTHENTICATED_API": "true"}
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "tests.apps.celery_app",
                             "flower", "--address=127.0.0.1", f"--port={port}"], cwd=ROOT, env=flower_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _up(port), timeout=30, message="Flower to listen")
        with worker("tests.apps.control", broker=broker, backend=backend, pool="gevent", concurrency=10,
                    queue=queue, home=home, env=env, args=("-E", "-n", hostname)) as wproc:
            app = client_app(broker, backend, queue=queue, home=home, control_exchange=control,
                             event_exchange=events)
            try:
                yield port, app, hostname, Marks(os.path.join(home, "marks")), wproc
            finally:
                app.close()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        drop_queue(broker, queue)


def _up(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def online(port, hostname):
    workers = api(port, "/workers?json=true")
    rows = workers.get("data", []) if isinstance(workers, dict) else []
    return any(row.get("hostname") == hostname and row.get("status") for row in rows)


def test_flower_sees_the_worker_and_its_tasks_and_its_actions_work(flower):
    port, app, hostname, marks, wproc = flower
    wait_until(lambda: online(port, hostname), timeout=30, message="Flower to list the worker online")
    info = wait_until(lambda: api(port, "/api/workers?refresh=1").get(hostname), timeout=20,
                      message="Flower's inspect of the worker")
    assert info["stats"]["pool"]["implementation"] == "greenq.pools.gevent"
    assert "tests.apps.control.nap" in info["registered"]

    done = app.send_task("tests.apps.basic.add", (20, 22))
    assert done.get(timeout=20) == 42
    task = wait_until(lambda: (api(port, "/api/tasks").get(done.id) or {}).get("state") == "SUCCESS"
                      and api(port, "/api/tasks")[done.id], timeout=20, message="the task SUCCESS in Flower")
    assert task["name"] == "tests.apps.basic.add" and task["worker"] == hostname

    # revoke with terminate, from Flower
    name = unique("long")
    running = app.send_task("tests.apps.control.nap", (name, 30))
    wait_until(lambda: marks.exists(f"{name}.started"), message="the task started")
    reply = api(port, f"/api/task/revoke/{running.id}?terminate=true", data={})
    assert "revoke" in json.dumps(reply).lower()
    wait_until(lambda: running.state == states.REVOKED, timeout=20, message="REVOKED after Flower's revoke")

    # rate limit, from Flower (it knows the tasks of its own Celery app): 1/m holds the second call back
    limit = "/api/task/rate-limit/tests.apps.basic.add"
    reply = api(port, limit, data={"workername": hostname, "ratelimit": "1/m"})
    assert "new rate limit set successfully" in json.dumps(reply)
    first, second = (app.send_task("tests.apps.basic.add", (n, n)) for n in (1, 2))
    first.get(timeout=20)
    time.sleep(1.0)
    assert second.state == states.PENDING
    api(port, limit, data={"workername": hostname, "ratelimit": "0"})
    assert second.get(timeout=20) == 4
