"""Far-future ETA tasks are parked broker-side and come back on time, once.

Each test runs a worker whose parking horizon is 12 s (the least greenq
allows), so a 16 s countdown is parked and promoted within the test.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, redis_client, wait_until
from tests.support import broker_urls, client_app, require, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def eta_worker(tmp_path):
    started = []

    def start(kind, **env):
        broker, backend = broker_urls(kind)
        queue, prefix, home = unique("q"), unique("park") + ":", str(tmp_path / f"w{len(started)}")
        env = {"GREENQ_TEST_ETA_HORIZON": "12", "GREENQ_TEST_PARKING_PREFIX": prefix,
               **{k: str(v) for k, v in env.items()}}
        cm = worker("tests.apps.eta", broker=broker, backend=backend, pool="gevent", concurrency=50,
                    queue=queue, home=home, env=env)
        proc = cm.__enter__()
        app = client_app(broker, backend, queue=queue, home=home)
        started.append((cm, app, broker, queue, prefix))
        return proc, app, Marks(os.path.join(home, "marks")), prefix

    yield start
    for cm, app, broker, queue, prefix in reversed(started):
        app.close()
        cm.__exit__(None, None, None)
        if broker.startswith("redis"):
            client = redis_client(broker)
            keys = client.keys(prefix + "*")
            if keys:
                client.delete(*keys)
            client.close()
        if not broker.startswith("embedded"):
            drop_queue(broker, queue)


def ran_at(marks, name):
    with open(os.path.join(marks.path, name)) as f:
        return [float(line) for line in f if line.strip()]


@pytest.mark.parametrize("kind", ["redis", "amqp", "embedded"])
def test_a_far_future_task_is_parked_then_runs_on_time_once(eta_worker, kind):
    proc, app, marks, prefix = eta_worker(kind)
    name = unique("far")
    sent = time.time()
    result = app.send_task("tests.apps.eta.stamp", (name,), countdown=16)
    eta = sent + 16
    if kind == "redis":
        client = redis_client(broker_urls("redis")[0])
        wait_until(lambda: client.zscore(f"{prefix}due", result.id), timeout=5, message="the task parked")
        client.close()
    wait_until(lambda: marks.exists(name), timeout=30, message="the parked task ran")
    lateness = ran_at(marks, name)[0] - eta
    assert -0.05 <= lateness < 1.0, f"ran {lateness:+.3f}s from its ETA"
    assert result.get(timeout=10) >= eta - 0.05
    time.sleep(1.0)
    assert len(ran_at(marks, name)) == 1


@pytest.mark.parametrize("kind", ["redis", "embedded"])
def test_scheduled_lists_parked_tasks_and_worker_eta_task_limit_caps_what_is_held(eta_worker, kind):
    proc, app, marks, prefix = eta_worker(kind, GREENQ_TEST_ETA_LIMIT=5, GREENQ_TEST_ETA_HORIZON=600)
    names = [unique("lim") for _ in range(20)]
    results = [app.send_task("tests.apps.eta.stamp", (n,), countdown=14) for n in names]
    due = time.time() + 14
    from greenq.parking import parking_for
    probe = client_app(*broker_urls(kind), home=os.path.dirname(marks.path), eta_parking_prefix=prefix)
    parking = parking_for(probe)
    # 5 held in the worker (its limit), the other 15 parked broker-side
    wait_until(lambda: parking.count() == 15, timeout=10, message="15 tasks parked")
    listed = parking.scheduled()
    assert len(listed) == 15 and {e["request"]["name"] for e in listed} == {"tests.apps.eta.stamp"}
    assert all(e["parked"] for e in listed)
    for n in names:
        wait_until(lambda n=n: marks.exists(n), timeout=30, message=f"{n} ran")
    late = [ran_at(marks, n)[0] - due for n in names]
    assert max(late) < 1.5, f"latest ran {max(late):.3f}s after its ETA"
    assert all(len(ran_at(marks, n)) == 1 for n in names)
    assert [r.get(timeout=10) is not None for r in results] == [True] * 20
    parking.close()
    probe.close()


def test_many_promoters_publish_each_parked_task_exactly_once(tmp_path):
    """Four stores (as four workers would have) promote 400 due tasks at once."""
    from greenq import App
    from greenq.parking import RedisParking
    from greenq.protocol import Request

    url = require("redis")
    queue, prefix = unique("q"), unique("park") + ":"
    apps = [App(f"p{n}", broker=url, backend="disabled://", eta_parking_prefix=prefix, task_default_queue=queue)
            for n in range(4)]
    stores = [RedisParking(app, url) for app in apps]

    class Message:
        properties = {"correlation_id": None}

    now = time.time()
    for n in range(400):
        request = Request(id=f"id-{n}", name="t.x", headers={"id": f"id-{n}", "task": "t.x"}, body=b'[[], {}, {}]',
                          content_type="application/json", content_encoding="utf-8", message=Message(),
                          delivery_info={"exchange": "", "routing_key": queue})
        stores[0].park(request, now - 1)
    counts = []
    threads = [threading.Thread(target=lambda s=s: counts.append(sum(s.promote(time.time()) for _ in range(5))))
               for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    client = redis_client(url)
    try:
        assert sum(counts) == 400
        assert client.llen(queue) == 400
        assert stores[0].count() == 0
    finally:
        drop_queue(url, queue)
        keys = client.keys(prefix + "*")
        if keys:
            client.delete(*keys)
        client.close()
        for store, app in zip(stores, apps):
            store.close()
            app.close()


def test_a_claim_left_by_a_dead_promoter_is_taken_over(tmp_path):
    from greenq import App
    from greenq.parking import CLAIM_LEASE, RedisParking

    url = require("redis")
    queue, prefix = unique("q"), unique("park") + ":"
    app = App("p", broker=url, backend="disabled://", eta_parking_prefix=prefix, task_default_queue=queue)
    store = RedisParking(app, url)
    client = redis_client(url)
    try:
        snap = {"id": "dead-1", "task": "t.x", "eta": 0, "body": "[[], {}, {}]", "body_b64": False,
                "headers": {"id": "dead-1"}, "properties": {}, "content_type": "application/json",
                "content_encoding": "utf-8", "exchange": "", "routing_key": queue}
        import json
        client.hset(f"{prefix}messages", "dead-1", json.dumps(snap))
        client.zadd(f"{prefix}claimed", {"dead-1": time.time() - 1})  # a lease that ran out
        assert store.promote(time.time()) == 1
        assert client.llen(queue) == 1
        assert store.count() == 0
        assert CLAIM_LEASE >= 30
        # a revoked parked task is taken out at once, with its message for the REVOKED record
        snap["id"] = "revoked-1"
        client.hset(f"{prefix}messages", "revoked-1", json.dumps(snap))
        client.zadd(f"{prefix}due", {"revoked-1": time.time() + 3600})
        assert [s["id"] for s in store.discard(["revoked-1", "unknown"])] == ["revoked-1"]
        assert store.count() == 0 and store.scheduled() == []
    finally:
        drop_queue(url, queue)
        keys = client.keys(prefix + "*")
        if keys:
            client.delete(*keys)
        client.close()
        store.close()
        app.close()
