"""Remote control against a real broker: every command through app.control,
the main ones through the greenq CLI and the stock Celery CLI.

One worker per broker (-P gevent -c 2) serves the module; each has its own
control exchange, so parallel test processes never hear each other.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from greenq import states
from greenq.exceptions import TaskRevokedError, TimeLimitExceeded
from tests.integration.conftest import Marks
from tests.integration.helpers import drop_queue, wait_until
from tests.support import ROOT, broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


class Node:
    def __init__(self, kind, proc, app, home, queue, hostname, exchange, broker, backend):
        self.kind, self.proc, self.app, self.home, self.queue = kind, proc, app, home, queue
        self.hostname, self.exchange, self.broker, self.backend = hostname, exchange, broker, backend
        self.marks = Marks(os.path.join(home, "marks"))
        self.control = app.control

    def send(self, name, *args, **options):
        return self.app.send_task(f"tests.apps.control.{name}", args, **options)

    def one(self, replies):
        """The reply of this node from a broadcast's list of replies."""
        merged = {k: v for reply in replies or [] for k, v in reply.items()}
        assert self.hostname in merged, f"no reply from {self.hostname}: {replies!r}"
        return merged[self.hostname]

    def call(self, command, timeout=2.0, **arguments):
        return self.one(self.control.broadcast(command, arguments, destination=[self.hostname], reply=True,
                                               timeout=timeout))

    def env(self):
        return {**os.environ, "GREENQ_BROKER_URL": self.broker, "GREENQ_RESULT_BACKEND": self.backend,
                "GREENQ_TEST_CONTROL_EXCHANGE": self.exchange, "GREENQ_TEST_QUEUE": self.queue,
                "GREENQ_HOME": self.home, "PYTHONPATH": ROOT}


@pytest.fixture(scope="module", params=["redis", "amqp"])
def node(request, tmp_path_factory):
    kind = request.param
    broker, backend = broker_urls(kind)
    home = str(tmp_path_factory.mktemp(f"control-{kind}"))
    queue, exchange = unique("q"), unique("ctl")
    hostname = f"{unique('node')}@test"
    with worker("tests.apps.control", broker=broker, backend=backend, pool="gevent", concurrency=2, queue=queue,
                home=home, env={"GREENQ_TEST_CONTROL_EXCHANGE": exchange}, args=("-n", hostname)) as proc:
        app = client_app(broker, backend, queue=queue, home=home, control_exchange=exchange)
        n = Node(kind, proc, app, home, queue, hostname, exchange, broker, backend)
        wait_until(lambda: app.control.ping(destination=[hostname], timeout=0.5), timeout=20,
                   message="the worker to answer ping")
        try:
            yield n
        finally:
            app.close()
    drop_queue(broker, queue)


# ------------------------------------------------------------------ inspect
def test_ping_by_destination_and_by_pattern(node):
    assert node.call("ping") == {"ok": "pong"}
    assert node.control.ping(destination=["nobody@nowhere"], timeout=0.5) == []
    by_glob = node.control.broadcast("ping", pattern=node.hostname.split("@")[0][:8] + "*", matcher="glob",
                                     reply=True, timeout=1.0)
    assert node.one(by_glob) == {"ok": "pong"}
    assert node.control.broadcast("ping", pattern="^nomatch$", matcher="pcre", reply=True, timeout=0.5) == []


def test_stats_registered_queues_conf_clock_report(node):
    stats = node.call("stats")
    assert stats["pool"]["max-concurrency"] >= 1 and stats["pool"]["implementation"] == "greenq.pools.gevent"
    assert stats["pid"] == node.proc.pid and "utime" in stats["rusage"] and int(stats["clock"]) > 0
    assert "tests.apps.control.nap" in node.call("registered")
    assert [q["name"] for q in node.call("active_queues")] == [node.queue]
    assert node.call("conf")["task_default_queue"] == node.queue
    assert node.call("clock")["clock"] > 0
    assert "greenq" in node.call("report")["ok"]
    inspector = node.control.inspect(destination=[node.hostname], timeout=2.0)
    assert node.hostname in inspector.stats() and node.hostname in inspector.ping()


def test_active_reserved_and_query_task(node):
    names = [unique("nap") for _ in range(3)]
    results = [node.send("nap", name, 3) for name in names]
    wait_until(lambda: node.marks.exists(f"{names[0]}.started") and node.marks.exists(f"{names[1]}.started"),
               message="two naps started")
    active = node.call("active")
    assert {t["id"] for t in active} >= {results[0].id, results[1].id}
    assert all(t["name"] == "tests.apps.control.nap" and t["hostname"] == node.hostname for t in active)
    reserved = node.call("reserved")  # -c 2: the third waits for a slot
    assert [t["id"] for t in reserved] == [results[2].id]
    found = node.call("query_task", ids=[results[0].id, results[2].id, "unknown"])
    assert found[results[0].id][0] == "active" and found[results[2].id][0] == "reserved"
    assert "unknown" not in found
    for r in results:
        r.get(timeout=20)


def test_scheduled_then_revoked_before_it_runs(node):
    name = unique("later")
    result = node.send("nap", name, 0, countdown=60)
    wait_until(lambda: any(e["request"]["id"] == result.id for e in node.call("scheduled")),
               message="the task in scheduled")
    assert node.call("revoke", task_id=result.id) == {"ok": f"tasks {result.id} flagged as revoked"}
    wait_until(lambda: result.state == states.REVOKED, message="REVOKED stored at once")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=5)
    assert result.id in node.call("revoked")
    assert all(e["request"]["id"] != result.id for e in node.call("scheduled"))
    assert not node.marks.exists(f"{name}.started")


def test_revoke_with_terminate_ends_a_running_task(node):
    name = unique("long")
    result = node.send("nap", name, 30)
    wait_until(lambda: node.marks.exists(f"{name}.started"), message="the task started")
    reply = node.call("revoke", task_id=[result.id], terminate=True, signal="SIGTERM")
    assert reply["ok"].startswith(f"terminate: {result.id}")
    wait_until(lambda: result.state == states.REVOKED, message="REVOKED after terminate")
    assert not node.marks.exists(f"{name}.done")
    assert node.send("nap", unique("after"), 0).get(timeout=20) == 0  # the worker carries on


def test_rate_limit_takes_effect_and_can_be_lifted(node):
    assert node.call("rate_limit", task_name="tests.apps.control.nap", rate_limit="1/m") == \
        {"ok": "new rate limit set successfully"}
    try:
        first, second = node.send("nap", unique("r"), 0), node.send("nap", unique("r"), 0)
        first.get(timeout=10)
        time.sleep(1.0)
        assert second.state == states.PENDING  # waiting for its token: 1 a minute
        assert node.call("rate_limit", task_name="tests.apps.control.nap", rate_limit=None) == \
            {"ok": "rate limit disabled successfully"}
        assert second.get(timeout=10) == 0
    finally:
        node.call("rate_limit", task_name="tests.apps.control.nap", rate_limit=None)


def test_time_limit_takes_effect(node):
    assert node.call("time_limit", task_name="tests.apps.control.nap", soft=None, hard=1) == \
        {"ok": "time limits set successfully"}
    try:
        with pytest.raises(TimeLimitExceeded):
            node.send("nap", unique("tl"), 5).get(timeout=20)
    finally:
        node.call("time_limit", task_name="tests.apps.control.nap", soft=None, hard=None)


def test_add_and_cancel_consumer(node):
    extra = unique("extra")
    try:
        assert node.call("add_consumer", queue=extra) == {"ok": f"add consumer {extra}"}
        assert node.call("add_consumer", queue=extra) == {"ok": f"already consuming from {extra!r}"}
        wait_until(lambda: extra in [q["name"] for q in node.call("active_queues")], message="queue listed")
        assert node.app.send_task("tests.apps.control.nap", (unique("x"), 0), queue=extra).get(timeout=20) == 0
        assert node.call("cancel_consumer", queue=extra) == {"ok": f"no longer consuming from {extra}"}
        assert extra not in [q["name"] for q in node.call("active_queues")]
        assert "error" in node.call("cancel_consumer", queue=extra)
    finally:
        drop_queue(node.broker, extra)


def test_pool_grow_shrink_autoscale(node):
    before = node.call("stats")["pool"]["max-concurrency"]
    assert node.call("pool_grow", n=3) == {"ok": f"pool will grow: {before + 3} slots"}
    assert node.call("stats")["pool"]["max-concurrency"] == before + 3
    assert node.call("pool_shrink", n=3) == {"ok": f"pool will shrink: {before} slots"}
    assert node.call("autoscale", max=5, min=1) == {"ok": "autoscale now max=5 min=1"}
    assert node.call("stats")["pool"]["max-concurrency"] == 5
    node.call("autoscale", max=before, min=1)


def test_events_toggle_and_hello(node):
    assert node.call("enable_events")["ok"].startswith("task events")
    assert node.call("disable_events")["ok"].startswith("task events")
    hello = node.call("hello", from_node="other@host", revoked={"from-the-other-node": time.time()})
    assert "from-the-other-node" in hello["revoked"] and hello["clock"] > 0
    assert "from-the-other-node" in node.call("revoked")


@pytest.mark.parametrize("command, arguments, says", [
    ("no_such_command", {}, "unknown command 'no_such_command'"),
    ("rate_limit", {"task_name": "tests.apps.control.nap"}, "missing a required argument"),
    ("rate_limit", {"task_name": "tests.apps.control.nap", "rate_limit": "fast"}, "rate limit must be like"),
    ("rate_limit", {"task_name": "no.such.task", "rate_limit": "1/s"}, "not registered"),
    ("time_limit", {"task_name": "tests.apps.control.nap", "soft": "x"}, "must be a number"),
    ("revoke", {"task_id": 42}, "task_id must be a task id"),
    ("pool_grow", {"n": "many"}, "n must be a whole number"),
    ("add_consumer", {"queue": ""}, "needs a queue name"),
    ("ping", {"unexpected": 1}, "unexpected keyword argument"),
])
def test_bad_arguments_get_a_clear_error_and_the_thread_lives_on(node, command, arguments, says):
    reply = node.call(command, **arguments)
    assert says in reply["error"]
    assert node.call("ping") == {"ok": "pong"}


def test_a_malformed_control_message_is_ignored(node):
    from kombu import Exchange, Producer
    with node.app.connection() as conn:
        producer = Producer(conn.default_channel)
        exchange = Exchange(f"{node.exchange}.pidbox", type="fanout", durable=False, delivery_mode="transient")
        producer.publish(["not", "a", "command"], exchange=exchange, routing_key="", serializer="json",
                         declare=[exchange])
    assert node.call("ping") == {"ok": "pong"}
    node.proc.wait_for_log("not a command")


# ------------------------------------------------------------------ CLIs
def run(argv, node, timeout=30):
    return subprocess.run(argv, env=node.env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_greenq_cli_inspect_control_status(node):
    greenq = [sys.executable, "-m", "greenq"]
    target = ["-A", "tests.apps.control", "-d", node.hostname, "-t", "2"]
    out = run([*greenq, "inspect", "ping", *target], node)
    assert out.returncode == 0 and f"-> {node.hostname}: OK" in out.stdout, out.stderr
    out = run([*greenq, "inspect", "stats", *target, "--json"], node)
    assert json.loads(out.stdout)[node.hostname]["pool"]["implementation"] == "greenq.pools.gevent"
    out = run([*greenq, "control", "rate_limit", "tests.apps.control.nap", "100/s", *target], node)
    assert out.returncode == 0 and "new rate limit set successfully" in out.stdout
    run([*greenq, "control", "rate_limit", "tests.apps.control.nap", "0", *target], node)
    out = run([*greenq, "status", *target], node)
    assert out.returncode == 0 and f"{node.hostname}: OK" in out.stdout and "1 node online." in out.stdout
    out = run([*greenq, "inspect", "no_such_thing", *target], node)
    assert out.returncode == 2 and "unknown inspect command 'no_such_thing'" in out.stderr
    out = run([*greenq, "control", "pool_grow", "many", *target], node)
    assert out.returncode == 2 and "n must be int" in out.stderr
    out = run([*greenq, "inspect", "ping", "-A", "tests.apps.control", "-d", "nobody@nowhere", "-t", "0.5"], node)
    assert out.returncode == 1 and "No nodes replied within 0.5 s" in out.stderr


def test_stock_celery_cli_talks_to_the_greenq_worker(node):
    celery = [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "tests.apps.celery_app"]
    out = run([*celery, "inspect", "ping", "-d", node.hostname, "-t", "2"], node)
    assert out.returncode == 0 and "pong" in out.stdout, out.stdout + out.stderr
    out = run([*celery, "inspect", "registered", "-d", node.hostname, "-t", "2", "--json"], node)
    assert "tests.apps.control.nap" in json.loads(out.stdout)[node.hostname]
    out = run([*celery, "inspect", "stats", "-d", node.hostname, "-t", "2", "--json"], node)
    assert json.loads(out.stdout)[node.hostname]["pid"] == node.proc.pid
    out = run([*celery, "status", "-d", node.hostname, "-t", "2"], node)
    assert out.returncode == 0 and node.hostname in out.stdout
    out = run([*celery, "control", "rate_limit", "tests.apps.control.nap", "50/s", "-d", node.hostname, "-t", "2"],
              node)
    assert "new rate limit set successfully" in out.stdout, out.stdout + out.stderr
    node.call("rate_limit", task_name="tests.apps.control.nap", rate_limit=None)


@pytest.mark.parametrize("argv, expect", [
    (["inspect", "stats"], lambda r: "pool" in r),
    (["inspect", "active"], lambda r: isinstance(r, list)),
    (["inspect", "reserved"], lambda r: isinstance(r, list)),
    (["inspect", "scheduled"], lambda r: isinstance(r, list)),
    (["inspect", "revoked"], lambda r: isinstance(r, list)),
    (["inspect", "registered"], lambda r: "tests.apps.control.nap" in r),
    (["inspect", "active_queues"], lambda r: len(r) >= 1),
    (["inspect", "conf"], lambda r: "task_default_queue" in r),
    (["inspect", "query_task", "no-such-id"], lambda r: r == {}),
    (["inspect", "clock"], lambda r: r["clock"] > 0),
    (["inspect", "report"], lambda r: "greenq" in r["ok"]),
    (["inspect", "hello"], lambda r: "revoked" in r),
    (["control", "revoke", "cli-revoked-id"], lambda r: "flagged as revoked" in r["ok"]),
    (["control", "terminate", "cli-terminated-id", "SIGTERM"], lambda r: "terminate" in r["ok"]),
    (["control", "time_limit", "tests.apps.control.nap", "none", "none"], lambda r: "time limits" in r["ok"]),
    (["control", "enable_events"], lambda r: "task events" in r["ok"]),
    (["control", "disable_events"], lambda r: "task events" in r["ok"]),
    (["control", "heartbeat"], lambda r: r == {"ok": "heartbeat sent"}),
    (["control", "pool_grow", "1"], lambda r: "grow" in r["ok"]),
    (["control", "pool_shrink", "1"], lambda r: "shrink" in r["ok"]),
    (["control", "autoscale", "2", "1"], lambda r: r["ok"] == "autoscale now max=2 min=1"),
    (["control", "cancel_consumer", "not-consumed"], lambda r: "not consuming" in r["error"]),
])
def test_every_command_through_the_greenq_cli(node, argv, expect):
    out = run([sys.executable, "-m", "greenq", *argv, "-A", "tests.apps.control", "-d", node.hostname, "-t", "3",
               "--json"], node)
    replies = json.loads(out.stdout)
    assert expect(replies[node.hostname]), replies
    assert out.returncode == (1 if "error" in json.dumps(replies) else 0), out.stderr
