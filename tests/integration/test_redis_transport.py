"""greenq's Redis transport against a real Redis: the batched fetch hands every
message to the consumer of the queue it came from, exactly once and intact,
records it as unacked in the same step, and buffered acks clear the records."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from greenq import App
from tests.integration.helpers import drop_queue, redis_client, wait_until
from tests.support import REDIS_URL, require, unique

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def names():
    require("redis")
    base = unique("transport")
    names = {"a": f"{base}-a", "b": f"{base}-b", "unacked": f"{base}-unacked",
             "index": f"{base}-unacked_index", "mutex": f"{base}-unacked_mutex"}
    yield names
    for queue in (names["a"], names["b"]):
        drop_queue(REDIS_URL, queue)
    client = redis_client()
    try:
        client.delete(names["unacked"], names["index"], names["mutex"])
    finally:
        client.close()


def test_batched_fetch_delivers_each_message_once_to_its_own_queue(names):
    from kombu import Consumer, Exchange, Producer, Queue

    app = App("t", broker=REDIS_URL, backend="disabled://", broker_transport_options={
        "unacked_key": names["unacked"], "unacked_index_key": names["index"],
        "unacked_mutex_key": names["mutex"], "fetch_batch": 16})
    queues = {key: Queue(names[key], Exchange(names[key]), names[key], max_priority=9) for key in ("a", "b")}
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sent = {"a": [], "b": []}
    with app.connection() as conn:
        producer = Producer(conn.default_channel)
        for i in range(60):
            key = "a" if i % 3 else "b"
            # plain bodies, non-ASCII text (\u escapes in the envelope) and kombu's typed values
            # (a datetime in the headers) must all come through the same
            headers = {"n": i, "text": "caf\u00e9 \u2603" if i % 5 == 0 else "plain",
                       **({"stamp": stamp} if i % 7 == 0 else {})}
            producer.publish({"n": i}, exchange=queues[key].exchange, routing_key=names[key], headers=headers,
                             declare=[queues[key]], serializer="json", priority=9 if i % 4 == 0 else 0)
            sent[key].append(i)

    received: dict[str, list] = {"a": [], "b": []}
    with app.connection() as conn:
        channel = conn.channel()

        def collect(key):
            def on_message(body, message):
                assert body == {"n": message.headers["n"]}
                expected_text = "caf\u00e9 \u2603" if message.headers["n"] % 5 == 0 else "plain"
                assert message.headers["text"] == expected_text
                if message.headers["n"] % 7 == 0:
                    assert message.headers["stamp"] == stamp
                received[key].append(message)
            return on_message

        consumers = [Consumer(channel, queues=[queues[key]], callbacks=[collect(key)]) for key in ("a", "b")]
        for consumer in consumers:
            consumer.qos(prefetch_count=1000)
            consumer.consume()

        def drained():
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
            return sum(len(v) for v in received.values()) >= 60

        wait_until(drained, timeout=30, interval=0, message="all 60 messages")
        client = redis_client()
        try:
            # each delivered message is recorded as unacked until it is acked
            assert client.hlen(names["unacked"]) == 60
            assert client.zcard(names["index"]) == 60
            for key in ("a", "b"):
                assert sorted(m.headers["n"] for m in received[key]) == sent[key]
                assert len({m.delivery_tag for m in received[key]}) == len(sent[key])
            for messages in received.values():
                for message in messages:
                    message.ack()
            channel.flush_acks()
            assert client.hlen(names["unacked"]) == 0
            assert client.zcard(names["index"]) == 0
        finally:
            client.close()
        for consumer in consumers:
            consumer.cancel()
