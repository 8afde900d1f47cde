"""Routing: every form of task_routes, queue declarations and apply_async
options, decided without a broker and then delivered by real exchanges on the
embedded broker, Redis and RabbitMQ (topic and fanout need the real thing)."""
from __future__ import annotations

import re
import time

import pytest
from kombu import Consumer, Exchange, Queue

from greenq import App
from greenq.exceptions import QueueNotFound
from tests.integration.helpers import drop_queue
from tests.support import client_app, unique, worker

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- decisions (no broker)
def make_app(**settings):
    app = App("proj", broker="memory://", backend="disabled://", **settings)

    @app.task(name="feeds.fetch", queue="from-task", routing_key="from-task-key")
    def fetch(url):
        return url

    @app.task(name="feeds.parse")
    def parse(doc):
        return doc

    return app


def route(app, name, **options):
    return app.router.route(name, (), {}, options, task=app.tasks.get(name))


TOPIC = {"name": "news", "exchange": "news", "exchange_type": "topic", "routing_key": "news.#"}
FANOUT = [{"name": "bcast-a", "exchange": "bcast", "exchange_type": "fanout"},
          {"name": "bcast-b", "exchange": "bcast", "exchange_type": "fanout"}]


def test_a_new_destination_does_not_inherit_the_routing_key_of_a_lower_level():
    # the task says queue "from-task" with key "from-task-key"; routes move it to a
    # direct queue: the message must reach that queue, not carry the old key
    app = make_app(task_routes={"feeds.fetch": "moved"})
    assert (route(app, "feeds.fetch")["exchange"], route(app, "feeds.fetch")["routing_key"]) == ("", "moved")
    # and an explicit queue replaces a routed topic destination
    app = make_app(task_queues=[TOPIC], task_routes={"feeds.*": {"queue": "news", "routing_key": "news.uk"}})
    assert (route(app, "feeds.parse", queue="plain")["exchange"],
            route(app, "feeds.parse", queue="plain")["routing_key"]) == ("", "plain")


def test_an_explicit_routing_key_alone_keeps_the_routed_queue():
    app = make_app(task_queues=[TOPIC], task_routes={"feeds.*": {"queue": "news"}})
    r = route(app, "feeds.parse", routing_key="news.bbc.world")
    assert (r["queue"].name, r["exchange"], r["routing_key"]) == ("news", "news", "news.bbc.world")


def test_topic_and_fanout_queues_publish_through_their_exchange():
    app = make_app(task_queues=[TOPIC, *FANOUT])
    r = route(app, "feeds.parse", queue="news")
    assert (r["exchange"], r["routing_key"]) == ("news", "news.#")   # no key given: the binding key
    r = route(app, "feeds.parse", queue="bcast-a")
    assert r["exchange"] == "bcast"


def test_an_exchange_without_a_queue_declares_the_queues_bound_to_it():
    app = make_app(task_queues=FANOUT)
    r = route(app, "feeds.parse", exchange="bcast")
    assert r["exchange"] == "bcast"
    assert sorted(q.name for q in r["declare"]) == ["bcast-a", "bcast-b"]
    # an exchange nobody declared is published to as given (RabbitMQ refuses it if missing)
    assert route(app, "feeds.parse", exchange="elsewhere", routing_key="k")["declare"] == []


def test_router_objects_pairs_and_regular_expressions():
    class ByArgument:
        def route_for_task(self, name, args, kwargs, options, task=None, **kw):
            return {"queue": "big"} if args and args[0] == "big" else None

    app = make_app(task_routes=[ByArgument(), [("feeds.p*", "pairs")], {re.compile(r"^mail\."): "mail"}])
    assert app.router.route("feeds.parse", ("big",), {}, {})["queue"].name == "big"
    assert app.router.route("feeds.parse", ("small",), {}, {})["queue"].name == "pairs"
    assert app.router.route("mail.send", (), {}, {})["queue"].name == "mail"
    assert app.router.route("other.task", (), {}, {})["queue"].name == "celery"


def test_a_type_error_inside_a_router_is_not_swallowed():
    def broken(name, args, kwargs, options, task=None):
        raise TypeError("bug in the router")

    with pytest.raises(TypeError, match="bug in the router"):
        route(make_app(task_routes=[broken]), "feeds.parse")


def test_missing_queue_raises_queue_not_found():
    app = make_app(task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'typo' is not in task_queues"):
        route(app, "feeds.parse", queue="typo")


def test_configurable_default_queue_exchange_and_key():
    app = make_app(task_default_queue="work", task_default_exchange="tasks", task_default_routing_key="work.key")
    r = route(app, "feeds.parse")
    assert (r["queue"].name, r["queue"].exchange.name, r["queue"].routing_key) == ("work", "tasks", "work.key")
    assert (r["exchange"], r["routing_key"]) == ("", "work")   # direct: straight to the queue


# ---------------------------------------------------------------- delivery on real brokers
def routing_app(broker_url, backend_url, home, prefix):
    """Queues of every exchange type, names unique to this test."""
    p = prefix
    queues = [
        {"name": f"{p}-default"},
        {"name": f"{p}-direct"},
        {"name": f"{p}-feeds", "exchange": f"{p}-topic", "exchange_type": "topic", "routing_key": "feed.#"},
        {"name": f"{p}-bbc", "exchange": f"{p}-topic", "exchange_type": "topic", "routing_key": "*.bbc"},
        {"name": f"{p}-fan-a", "exchange": f"{p}-fan", "exchange_type": "fanout"},
        {"name": f"{p}-fan-b", "exchange": f"{p}-fan", "exchange_type": "fanout"},
    ]
    routes = [
        {f"{p}.routed.exact": {"queue": f"{p}-direct"}, f"{p}.routed.glob.*": f"{p}-direct"},
        lambda name, args, kwargs, options, task=None: (
            {"exchange": f"{p}-topic", "routing_key": f"feed.{args[0]}"} if name == f"{p}.by_function" else None),
    ]
    return client_app(broker_url, backend_url, queue=f"{p}-default", home=home,
                      task_queues=queues, task_routes=routes)


class Collector:
    """Consumes each queue on its own connection (as separate workers would: kombu's
    Redis transport delivers a fanout exchange to one queue per channel) and
    records the task ids each queue receives."""

    def __init__(self, app, names):
        self.seen = {name: [] for name in names}
        self.connections = []
        self.queues = []
        for name in names:
            connection = app.connection()
            queue = app.queues[name]
            consumer = Consumer(connection.channel(), queues=[queue], accept=["json"],
                                on_message=lambda message, name=name: self._on(name, message))
            consumer.consume()
            self.connections.append(connection)
            self.queues.append(consumer.queues[0])
        self.drain(0.3)  # Redis subscribes to fanout exchanges while polling

    def _on(self, name, message):
        self.seen[name].append(message.headers["id"])
        message.ack()

    def drain(self, seconds, until=None):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            for connection in self.connections:
                try:
                    connection.drain_events(timeout=0.02)
                except TimeoutError:
                    pass

    def close(self, delete=True):
        for queue in self.queues if delete else ():
            try:
                queue.delete()
                if queue.exchange is not None and queue.exchange.name:
                    queue.exchange.delete()
            except Exception:
                pass
        for connection in self.connections:
            connection.release()


def test_every_routing_form_reaches_the_right_queues(broker, home):
    kind, broker_url, backend_url = broker
    p = unique("rt")
    app = routing_app(broker_url, backend_url, home, p)
    names = [q for q in app.queues if q.startswith(p)]
    collector = Collector(app, names)
    try:
        sent = {
            "default": app.send_task(f"{p}.plain").id,
            "routed_exact": app.send_task(f"{p}.routed.exact").id,
            "routed_glob": app.send_task(f"{p}.routed.glob.x").id,
            "explicit_queue": app.send_task(f"{p}.routed.exact", queue=f"{p}-bbc").id,
            "topic_both": app.send_task(f"{p}.plain", exchange=f"{p}-topic", routing_key="feed.bbc").id,
            "topic_feeds": app.send_task(f"{p}.plain", exchange=f"{p}-topic", routing_key="feed.cnn.world").id,
            "topic_bbc": app.send_task(f"{p}.plain", exchange=f"{p}-topic", routing_key="news.bbc").id,
            "topic_nobody": app.send_task(f"{p}.plain", exchange=f"{p}-topic", routing_key="news.cnn").id,
            "by_function": app.send_task(f"{p}.by_function", ("bbc",)).id,
            "fanout": app.send_task(f"{p}.plain", exchange=f"{p}-fan").id,
            "fanout_by_queue": app.send_task(f"{p}.plain", queue=f"{p}-fan-a").id,
        }
        expected = {
            f"{p}-default": {"default"},
            f"{p}-direct": {"routed_exact", "routed_glob"},
            f"{p}-feeds": {"topic_both", "topic_feeds", "by_function"},
            f"{p}-bbc": {"explicit_queue", "topic_both", "topic_bbc", "by_function"},
            f"{p}-fan-a": {"fanout", "fanout_by_queue"},
            f"{p}-fan-b": {"fanout", "fanout_by_queue"},
        }
        total = sum(len(v) for v in expected.values())
        collector.drain(15, until=lambda: sum(len(v) for v in collector.seen.values()) >= total)
        collector.drain(0.3)  # anything extra (a wrong delivery) shows up too
        by_id = {v: k for k, v in sent.items()}
        got = {name: {by_id.get(i, i) for i in ids} for name, ids in collector.seen.items()}
        assert got == expected
        assert all(len(ids) == len(set(ids)) for ids in collector.seen.values()), collector.seen
    finally:
        collector.close()
        app.close()


@pytest.mark.slow
def test_worker_consumes_only_its_queues(broker, home):
    """-Q names the queues, -X leaves some out; a second worker picks up the rest."""
    kind, broker_url, backend_url = broker
    q = unique("wq")
    env = {"GREENQ_TEST_QUEUE": q}
    app = client_app(broker_url, backend_url, queue=q, home=home)
    try:
        with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, home=home, env=env,
                    args=("-Q", q)) as w:
            assert f"queues:      {q}\n" in w.log
            here = app.send_task("tests.apps.mixed.add", (1, 2))
            elsewhere = app.send_task("tests.apps.mixed.add", (2, 3), queue=f"{q}-cpu")
            assert here.get(timeout=20) == 3
            time.sleep(0.5)
            assert elsewhere.state == "PENDING"
        with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, home=home, env=env,
                    args=("-X", q)) as w:
            assert f"queues:      {q}-cpu\n" in w.log
            assert elsewhere.get(timeout=20) == 5
    finally:
        app.close()
        _drop(broker_url, [q, f"{q}-cpu"])


def _drop(broker_url, names):
    if broker_url.startswith(("redis", "amqp")):
        for name in names:
            drop_queue(broker_url, name)


@pytest.mark.slow
def test_retry_goes_back_to_the_queue_it_came_from(broker, home):
    """A task routed by task_routes to a non-default queue retries there, with the same id."""
    kind, broker_url, backend_url = broker
    q = unique("rq")
    app = client_app(broker_url, backend_url, queue=q, home=home)
    try:
        with worker("tests.apps.basic", broker=broker_url, backend=backend_url, home=home,
                    env={"GREENQ_TEST_QUEUE": q}, args=("-Q", f"{q}-retries")):
            result = app.send_task("tests.apps.basic.retry_until", (2,), queue=f"{q}-retries")
            assert result.get(timeout=20) == 2
    finally:
        app.close()
        _drop(broker_url, [q, f"{q}-retries"])


def test_exchange_objects_in_task_queues(broker, home):
    """kombu Queue/Exchange objects are accepted as they are."""
    kind, broker_url, backend_url = broker
    p = unique("ko")
    exchange = Exchange(f"{p}-x", type="topic")
    app = client_app(broker_url, backend_url, queue=f"{p}-default", home=home,
                     task_queues=[Queue(f"{p}-k", exchange, routing_key="k.*")])
    collector = Collector(app, [f"{p}-k"])
    try:
        sent = app.send_task(f"{p}.t", exchange=exchange, routing_key="k.one").id
        collector.drain(10, until=lambda: collector.seen[f"{p}-k"])
        assert collector.seen[f"{p}-k"] == [sent]
    finally:
        collector.close()
        app.close()
