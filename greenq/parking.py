"""Far-future ETAs, parked broker-side instead of held in worker memory.

A worker holds ETA/countdown tasks in its heap (:mod:`greenq.scheduler`)
only up to ``eta_parking_horizon`` seconds ahead (and at most
``worker_eta_task_limit`` of them).  A task due later is *parked*: its
message -- body, headers (id, eta, retries, ...) and properties unchanged --
is stored on the broker's side, then acked.  Shortly before it is due
(``PROMOTE_AHEAD`` seconds) it is published again to the exchange and
routing key it first came by, and some worker holds it in its heap for the
last seconds, so it still runs on time.

Why: a message a worker holds unacked on Redis comes back after the
visibility timeout (one hour by default) and runs twice; a million held
messages are a million objects in memory; and prefetch can only grow to
65,535.  Celery's green pools hit all three (see
reference/green-pool-pitfalls.md).

One store per broker kind:

* **Redis**: a sorted set of task ids by ETA and a hash of the messages.
  A Lua script *claims* due ids atomically, so with many workers promoting
  at once each task is promoted exactly once; a claim is a lease, and a
  worker that dies between claiming and publishing leaves it to be claimed
  again after ``CLAIM_LEASE`` seconds (at least once, never lost).
* **RabbitMQ**: kombu's native delayed-delivery topology (28 queues with
  fixed per-queue TTLs of 2^n seconds that dead-letter into each other,
  Celery's layout), with greenq's own prefix; the broker delivers the
  message back when its delay has passed, so nothing has to promote it.
  The delay is whole seconds.  RabbitMQ cannot list what it holds there:
  ``inspect scheduled`` shows only what the worker holds itself.
* **Embedded**: a SQLite table in the data directory, claimed in a
  transaction.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.protocol import Request

logger = logging.getLogger("greenq.parking")

PROMOTE_AHEAD = 3.0   # seconds: a parked task is published again this long before it is due
PROMOTE_EVERY = 1.0   # seconds between a worker's promotion rounds
CLAIM_LEASE = 60.0    # seconds a claim lasts before another worker may take the task over
BATCH = 500           # tasks promoted per round at most


def snapshot(request: "Request", until: float) -> dict[str, Any]:
    """What is kept of a parked message: enough to publish it again unchanged."""
    body = request.body
    encoded = isinstance(body, bytes)
    properties = {k: v for k, v in (request.message.properties or {}).items()
                  if k in ("correlation_id", "reply_to", "priority")}
    delivery = request.delivery_info or {}
    return {
        "id": request.id, "task": request.name, "eta": until,
        "body": base64.b64encode(body).decode() if encoded else body, "body_b64": encoded,
        "headers": request.headers, "properties": properties,
        "content_type": request.content_type, "content_encoding": request.content_encoding,
        "exchange": delivery.get("exchange") or "", "routing_key": delivery.get("routing_key") or "",
        "argsrepr": request.argsrepr, "kwargsrepr": request.kwargsrepr,
    }


def publish(app: "App", snap: dict[str, Any], *, exchange: str | None = None,
            routing_key: str | None = None) -> None:
    """Publish a parked message again (to where it first came by, unless told)."""
    body = base64.b64decode(snap["body"]) if snap.get("body_b64") else snap["body"]
    with app.producer_pool.acquire(block=True, timeout=app.conf.broker_pool_acquire_timeout) as producer:
        producer.publish(body, exchange=snap["exchange"] if exchange is None else exchange,
                         routing_key=(routing_key if routing_key is not None
                                      else snap["routing_key"] or app.conf.task_default_queue),
                         content_type=snap["content_type"], content_encoding=snap["content_encoding"],
                         headers=snap["headers"], retry=True, **snap["properties"])


def scheduled_entry(snap: dict[str, Any]) -> dict[str, Any]:
    """A parked task in ``inspect scheduled``'s shape."""
    headers = snap.get("headers") or {}
    return {"eta": datetime.fromtimestamp(snap["eta"], timezone.utc).isoformat(),
            "priority": (snap.get("properties") or {}).get("priority") or 0,
            "parked": True,
            "request": {"id": snap["id"], "name": snap["task"], "args": snap.get("argsrepr"),
                        "kwargs": snap.get("kwargsrepr"), "retries": headers.get("retries", 0),
                        "delivery_info": {"exchange": snap["exchange"], "routing_key": snap["routing_key"]}}}


class Parking:
    """The interface the worker uses; one subclass per broker kind."""

    kind = "none"
    can_list = True

    def setup(self, connection: Any, queues: Iterable[Any]) -> None:
        """Called after each (re)connect with the worker's consumed queues."""

    def park(self, request: "Request", until: float) -> None:
        """Store the message durably; the caller acks it afterwards.  Raises on failure."""
        raise NotImplementedError

    def promote(self, now: float) -> int:
        """Publish again what is due by ``now + PROMOTE_AHEAD``; returns how many."""
        return 0

    def discard(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Remove parked tasks (revoked); returns their snapshots."""
        return []

    def scheduled(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Parked tasks, soonest first, in ``inspect scheduled``'s shape."""
        return []

    def count(self) -> int | None:
        return None

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- Redis
_CLAIM = """
local due, claimed = KEYS[1], KEYS[2]
local upto, now, lease, batch = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local stale = redis.call('ZRANGEBYSCORE', claimed, '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(stale) do
  redis.call('ZREM', claimed, id)
  redis.call('ZADD', due, 0, id)
end
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', upto, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  redis.call('ZREM', due, id)
  redis.call('ZADD', claimed, lease, id)
end
return ids
"""

_DISCARD = """
local found = {}
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local m = redis.call('HGET', KEYS[2], id)
    redis.call('HDEL', KEYS[2], id)
    if m then table.insert(found, m) end
  end
end
return found
"""


class RedisParking(Parking):
    kind = "redis"

    def __init__(self, app: "App", url: str) -> None:
        import redis

        self.app = app
        self.client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
        prefix = app.conf.eta_parking_prefix
        self.due_key, self.msg_key, self.claimed_key = f"{prefix}due", f"{prefix}messages", f"{prefix}claimed"
        self._claim = self.client.register_script(_CLAIM)
        self._discard = self.client.register_script(_DISCARD)

    def park(self, request: "Request", until: float) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.msg_key, request.id, json.dumps(snapshot(request, until)))
        pipe.zadd(self.due_key, {request.id: until})
        pipe.execute()

    def promote(self, now: float) -> int:
        ids = self._claim(keys=[self.due_key, self.claimed_key],
                          args=[repr(now + PROMOTE_AHEAD), repr(now), repr(now + CLAIM_LEASE), BATCH])
        if not ids:
            return 0
        messages = self.client.hmget(self.msg_key, ids)
        done = []
        for task_id, raw in zip(ids, messages):
            if raw is None:  # discarded (revoked) between the claim and now
                done.append(task_id)
                continue
            publish(self.app, json.loads(raw))
            done.append(task_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.msg_key, *done)
        pipe.zrem(self.claimed_key, *done)
        pipe.execute()
        return len(done)

    def discard(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(task_ids)
        if not ids:
            return []
        return [json.loads(raw) for raw in self._discard(keys=[self.due_key, self.msg_key], args=ids)]

    def scheduled(self, limit: int = 1000) -> list[dict[str, Any]]:
        ids: list[Any] = list(self.client.zrange(self.due_key, 0, limit - 1))
        if not ids:
            return []
        return [scheduled_entry(json.loads(raw)) for raw in self.client.hmget(self.msg_key, ids) if raw]

    def count(self) -> int:
        return int(self.client.zcard(self.due_key)) + int(self.client.zcard(self.claimed_key))

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------- RabbitMQ
DELAY_BITS = 28  # kombu's native delayed delivery: delays up to 2^28 s (8.5 years)
MATCH_DELAY = "*." * DELAY_BITS  # the 28 delay words in front of a routing key


class AmqpParking(Parking):
    kind = "amqp"
    can_list = False

    def __init__(self, app: "App") -> None:
        self.app = app
        self.prefix = app.conf.eta_parking_prefix.rstrip(":_-.") or "greenq"
        self._declared = False

    def setup(self, connection: Any, queues: Iterable[Any]) -> None:
        from kombu import Exchange
        from kombu.transport import native_delayed_delivery as ndd

        channel = connection.channel()
        try:
            if not self._declared:
                ndd.declare_native_delayed_delivery_exchanges_and_queues(connection, "classic", self.prefix)
                self._declared = True
            # The last stage routes on "<28 delay words>.<routing key>": bind each
            # queue straight to it with its own key (works for direct exchanges too).
            delivery = Exchange(f"{self.prefix}_celery_delayed_delivery", type="topic").bind(channel)
            for queue in queues:
                exchange = queue.exchange
                if exchange is not None and exchange.type == "fanout":
                    logger.warning("queue %s is bound to a fanout exchange: far-future ETA tasks for it are "
                                   "held in memory, not parked", queue.name)
                    continue
                key = queue.routing_key or queue.name
                queue.bind(channel).bind_to(exchange=delivery, routing_key=MATCH_DELAY + key)
        finally:
            channel.close()

    def park(self, request: "Request", until: float) -> None:
        from kombu.transport import native_delayed_delivery as ndd

        delay = int(until - time.time() - PROMOTE_AHEAD)
        if delay < 1:
            raise ValueError("due too soon to park")
        snap = snapshot(request, until)
        routing_key = snap["routing_key"] or self.app.conf.task_default_queue
        publish(self.app, snap, exchange=ndd.level_name(DELAY_BITS - 1, self.prefix),
                routing_key=ndd.calculate_routing_key(delay, routing_key))


# ---------------------------------------------------------------------- embedded
class EmbeddedParking(Parking):
    kind = "embedded"

    def __init__(self, app: "App", path: str) -> None:
        self.app = app
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS parked (id TEXT PRIMARY KEY, eta REAL NOT NULL, "
                       "claimed REAL, message TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS parked_eta ON parked (eta)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def park(self, request: "Request", until: float) -> None:
        db = self._db()
        try:
            db.execute("INSERT OR REPLACE INTO parked (id, eta, claimed, message) VALUES (?, ?, NULL, ?)",
                       (request.id, until, json.dumps(snapshot(request, until))))
        finally:
            db.close()

    def promote(self, now: float) -> int:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")  # one promoter at a time across processes
            rows = db.execute("SELECT id, message FROM parked WHERE eta <= ? AND (claimed IS NULL OR claimed < ?) "
                              "ORDER BY eta LIMIT ?", (now + PROMOTE_AHEAD, now, BATCH)).fetchall()
            db.executemany("UPDATE parked SET claimed = ? WHERE id = ?", [(now + CLAIM_LEASE, r[0]) for r in rows])
            db.execute("COMMIT")
            for task_id, message in rows:
                publish(self.app, json.loads(message))
                db.execute("DELETE FROM parked WHERE id = ?", (task_id,))
            return len(rows)
        finally:
            db.close()

    def discard(self, task_ids: Iterable[str]) -> list[dict[str, Any]]:
        db = self._db()
        found = []
        try:
            for task_id in task_ids:
                row = db.execute("DELETE FROM parked WHERE id = ? AND claimed IS NULL RETURNING message",
                                 (task_id,)).fetchone()
                if row:
                    found.append(json.loads(row[0]))
        finally:
            db.close()
        return found

    def scheduled(self, limit: int = 1000) -> list[dict[str, Any]]:
        db = self._db()
        try:
            rows = db.execute("SELECT message FROM parked ORDER BY eta LIMIT ?", (limit,)).fetchall()
        finally:
            db.close()
        return [scheduled_entry(json.loads(r[0])) for r in rows]

    def count(self) -> int:
        db = self._db()
        try:
            return int(db.execute("SELECT COUNT(*) FROM parked").fetchone()[0])
        finally:
            db.close()


def parking_for(app: "App") -> Parking | None:
    """The parking store for the app's broker, or None (a transport with none,
    or ``eta_parking_horizon = None``: everything is held in memory)."""
    if app.conf.eta_parking_horizon is None:
        return None
    url = app.broker_url()
    if url.startswith("embedded://"):
        from greenq import embedded
        return EmbeddedParking(app, os.path.join(embedded.data_dir(app), "parked.sqlite3"))
    if url.startswith(("redis://", "rediss://", "redis+socket://")):
        return RedisParking(app, url.replace("redis+socket://", "unix://"))
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return AmqpParking(app)
    return None


def horizon(app: "App") -> float | None:
    """Seconds ahead beyond which an ETA task is parked: the setting, kept
    under half the Redis visibility timeout (a message held longer than that
    would be delivered again)."""
    value = app.conf.eta_parking_horizon
    if value is None:
        return None
    if app.broker_url().startswith(("redis://", "rediss://", "redis+socket://")):
        visibility = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
        if value > visibility / 2:
            logger.warning("eta_parking_horizon %.0fs is more than half the Redis visibility timeout (%.0fs): "
                           "using %.0fs, so that no held task is delivered twice", value, visibility, visibility / 2)
            value = visibility / 2
    return max(float(value), PROMOTE_AHEAD * 4)
