"""Events and heartbeats, read back by stock Celery's EventReceiver and State.

Each test's worker has its own event and control exchanges.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import pytest

from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, wait_until
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class Capture:
    """Every event on an exchange, through Celery's own receiver (the oracle)."""

    def __init__(self, broker, exchange):
        from celery import Celery
        self.app = Celery("watch", broker=broker)
        self.app.conf.event_exchange = exchange
        self.events: list[dict] = []
        self.ready = threading.Event()
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "the receiver did not start"

    def _run(self):
        with self.app.connection() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of(self, kind, **match):
        return [e for e in list(self.events) if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    def stop(self):
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)


@pytest.fixture(params=["redis", "amqp"])
def setup(request, tmp_path):
    kind = request.param
    broker, backend = broker_urls(kind)
    started = []

    def start(pool="gevent", concurrency=10, args=("-E",), app_module="tests.apps.control"):
        queue, events, control = unique("q"), unique("ev"), unique("ctl")
        home = str(tmp_path / f"w{len(started)}")
        capture = Capture(broker, events)
        time.sleep(0.3)  # Redis fan-out is pub/sub: subscribed before the worker speaks
        hostname = f"{unique('ev')}@test"
        cm = worker(app_module, broker=broker, backend=backend, pool=pool, concurrency=concurrency, queue=queue,
                    home=home, args=(*args, "-n", hostname),
                    env={"GREENQ_TEST_EVENT_EXCHANGE": events, "GREENQ_TEST_CONTROL_EXCHANGE": control})
        proc = cm.__enter__()
        app = client_app(broker, backend, queue=queue, home=home, control_exchange=control, event_exchange=events)
        started.append((cm, app, capture, queue))
        return proc, app, capture, hostname, Marks(os.path.join(home, "marks"))

    yield start
    for cm, app, capture, queue in reversed(started):
        app.close()
        cm.__exit__(None, None, None)
        capture.stop()
        drop_queue(broker, queue)


def test_task_and_worker_events_in_celerys_format(setup):
    from celery.events.state import State

    proc, app, capture, hostname, marks = setup()
    wait_until(lambda: capture.of("worker-online", hostname=hostname), message="worker-online")
    ok = app.send_task("tests.apps.basic.add", (2, 3))
    bad = app.send_task("tests.apps.basic.fail", ("nope",))
    assert ok.get(timeout=20) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=20)
    wait_until(lambda: capture.of("task-failed", uuid=bad.id), message="task-failed")
    received = capture.of("task-received", uuid=ok.id)[0]
    assert received["name"] == "tests.apps.basic.add" and received["hostname"] == hostname
    assert capture.of("task-started", uuid=ok.id)
    succeeded = capture.of("task-succeeded", uuid=ok.id)[0]
    assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
    failed = capture.of("task-failed", uuid=bad.id)[0]
    assert "nope" in failed["exception"] and "ValueError" in failed["traceback"]
    ours = [e for e in capture.events if e.get("hostname") == hostname]
    assert all({"timestamp", "utcoffset", "pid", "clock"} <= e.keys() for e in ours)
    clocks = [e["clock"] for e in ours]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)
    wait_until(lambda: capture.of("worker-heartbeat", hostname=hostname), timeout=5, message="a heartbeat")
    beat = capture.of("worker-heartbeat", hostname=hostname)[-1]
    assert beat["freq"] == 2.0 and beat["processed"] >= 2 and "loadavg" in beat
    state = State()
    for event in list(capture.events):
        state.event(event)
    assert state.workers[hostname].alive
    assert state.tasks[ok.id].state == "SUCCESS" and state.tasks[bad.id].state == "FAILURE"
    proc.stop()
    wait_until(lambda: capture.of("worker-offline", hostname=hostname), message="worker-offline")


def test_without_dash_e_only_worker_events_until_enable_events(setup):
    proc, app, capture, hostname, marks = setup(args=())
    assert app.send_task("tests.apps.basic.add", (1, 1)).get(timeout=20) == 2
    wait_until(lambda: capture.of("worker-heartbeat", hostname=hostname), timeout=5, message="a heartbeat")
    assert not [e for e in capture.events if e["type"].startswith("task-")]
    app.control.enable_events(destination=[hostname], reply=True, timeout=2)
    later = app.send_task("tests.apps.basic.add", (2, 2))
    assert later.get(timeout=20) == 4
    wait_until(lambda: capture.of("task-succeeded", uuid=later.id), message="task events after enable_events")
    assert app.control.heartbeat(destination=[hostname], reply=True, timeout=2) == [{hostname: {"ok": "heartbeat sent"}}]


def test_heartbeats_and_ping_while_a_task_spins_the_cpu(setup):
    """The control plane does not share the hub: a task holding it for 10 s
    stops neither the heartbeats nor the answers to ping."""
    proc, app, capture, hostname, marks = setup(pool="gevent", concurrency=1000, args=())
    wait_until(lambda: capture.of("worker-heartbeat", hostname=hostname), timeout=5, message="a heartbeat")
    name = unique("spin")
    spinning = app.send_task("tests.apps.control.spin_for", (name, 10.0))
    wait_until(lambda: marks.exists(f"{name}.started"), message="the spin started")
    spin_started = time.time()
    latencies = []
    for _ in range(10):
        t0 = time.monotonic()
        replies = app.control.ping(destination=[hostname], timeout=1.0)
        latencies.append(time.monotonic() - t0)
        assert replies == [{hostname: {"ok": "pong"}}], f"no pong while the task spins ({replies!r})"
        time.sleep(0.5)
    assert time.time() - spin_started < 10.0, "the pings should all fall inside the spin"
    spinning.get(timeout=30)
    beats = [e["timestamp"] for e in capture.of("worker-heartbeat", hostname=hostname)]
    during = [t for t in beats if spin_started - 2 <= t <= spin_started + 10]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert len(during) >= 5 and max(gaps) < 2.5, f"heartbeat gaps {gaps}"
    assert statistics.median(latencies) < 0.2, f"ping latencies {latencies}"


def test_greenq_events_cli_dumps_and_shows_the_live_view(setup):
    import json
    import subprocess
    import sys

    from tests.support import ROOT

    proc, app, capture, hostname, marks = setup()
    env = {**os.environ, **proc.env, "PYTHONPATH": ROOT}
    argv = [sys.executable, "-m", "greenq", "events", "-A", "tests.apps.control"]
    dumping = subprocess.Popen([*argv, "--json", "--duration", "6"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    live = subprocess.Popen([*argv, "--duration", "6"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    result = app.send_task("tests.apps.basic.add", (3, 4))
    assert result.get(timeout=20) == 7
    out, err = dumping.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    kinds = {e["type"] for e in events if e.get("hostname") == hostname}
    assert {"worker-heartbeat", "task-received", "task-succeeded"} <= kinds, (kinds, err)
    view, err = live.communicate(timeout=30)
    assert hostname in view and "ONLINE" in view and result.id in view and "SUCCESS" in view, view[-2000:] + err
