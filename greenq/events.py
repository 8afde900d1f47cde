"""Events: task and worker events in Celery's format, heartbeats on time.

A native OS thread with its own broker connection publishes everything, so
heartbeats go out every ``worker_heartbeat_interval`` seconds (2.0, Celery's
default) whatever the hub is doing: a task that spins the CPU does not make
Flower mark the worker offline (Celery's green pools do, flower #1000).
Task events cost the control loop one ``deque.append``; the thread sends
them in order, a few milliseconds later.

Format (reference/celery-protocol.md 4.5): exchange ``event_exchange``
(``celeryev``; topic, fanout on Redis), routing key = the type with ``-``
as ``.``, JSON, transient, fields ``type``, ``hostname``, ``timestamp``,
``utcoffset``, ``pid``, ``clock`` (the worker's Lamport clock, forwarded on
every event) plus the type's own.  Worker events are always sent (as
Celery does with its heartbeat enabled); task events with ``-E``, the
``worker_send_task_events`` setting or the ``enable_events`` command.
"""
from __future__ import annotations

import collections
import logging
import os
import platform
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greenq.worker import Worker

logger = logging.getLogger("greenq.events")

FLUSH_EVERY = 0.02  # seconds between the thread's looks at the queue of task events
MAX_QUEUED = 100_000  # task events kept while the broker is away; the oldest are dropped past it


def utcoffset() -> int:
    """Hours west of UTC, as Celery sends it (UTC+2 gives -2)."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone
    return offset // 3600


def event_exchange(app: Any) -> Any:
    from kombu import Exchange
    fanout = app.broker_url().startswith(("redis", "rediss", "embedded"))
    return Exchange(app.conf.event_exchange, type="fanout" if fanout else "topic", durable=True,
                    delivery_mode="transient", auto_delete=False)


class EventDispatcher:
    """The worker's event sender (``worker.events``)."""

    def __init__(self, worker: "Worker") -> None:
        import greenq
        self.worker = worker
        self.app = worker.app
        self.hostname = worker.hostname
        self.clock = worker.clock
        self.interval = float(self.app.conf.worker_heartbeat_interval)
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_QUEUED)
        self.pid = os.getpid()
        self.sw = {"sw_ident": "py-greenq", "sw_ver": greenq.__version__, "sw_sys": platform.system()}
        self._stopping = False
        self._offline_sent = False
        self._beat_now = False
        self._thread: Any = None
        self.sent = 0
        self.heartbeats = 0
        pool = worker.pool
        self._sleep = pool.native_sleep if pool is not None else time.sleep

    # called from the control loop (any thread) ---------------------------------------
    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "hostname": self.hostname, "timestamp": time.time(), "utcoffset": utcoffset(),
                "pid": self.pid, "clock": self.clock.forward(), **fields}

    def task_event(self, kind: str, request: Any, **fields: Any) -> None:
        self.queue.append(self.event(kind, uuid=request.id, **fields))

    def heartbeat(self) -> None:
        self._beat_now = True

    def enable(self) -> None:
        """Task events on (the flag itself is ``worker.send_events``)."""

    def disable(self) -> None:
        """Task events off."""

    def start(self) -> None:
        pool = self.worker.pool
        assert pool is not None
        self._thread = pool.start_native_thread(self._run, name=f"greenq-events-{self.hostname}")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued and worker-offline, then stop the thread."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout)

    # the thread ------------------------------------------------------------------------
    def worker_fields(self) -> dict[str, Any]:
        worker = self.worker
        try:
            loadavg = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            loadavg = [0.0, 0.0, 0.0]
        return {"freq": self.interval, **self.sw, "active": len(worker.state.active),
                "processed": sum(worker.state.total.values()), "loadavg": loadavg}

    def _run(self) -> None:
        delay = 0.5
        online_sent = False
        while True:
            try:
                online_sent = self._serve(online_sent)
                return
            except Exception as exc:
                if self._stopping:
                    return
                logger.error("%s: events lost the broker connection (%r); reconnecting in %.1fs",
                             self.hostname, exc, delay)
                end = time.monotonic() + delay
                while not self._stopping and time.monotonic() < end:
                    self._sleep(0.1)
                delay = min(delay * 2, 10.0)

    def _serve(self, online_sent: bool) -> bool:
        from kombu import Producer

        app = self.app
        with app.connection() as connection:
            connection.ensure_connection(max_retries=1)
            producer = Producer(connection.channel(), exchange=event_exchange(app), serializer="json",
                                auto_declare=True)

            def send(event: dict[str, Any]) -> None:
                producer.publish(event, routing_key=event["type"].replace("-", "."), delivery_mode=1,
                                 headers={"hostname": self.hostname}, retry=False)
                self.sent += 1

            if not online_sent:
                send(self.event("worker-online", **self.worker_fields()))
                online_sent = True
            next_beat = time.monotonic() + self.interval
            while True:
                queue = self.queue
                while queue:
                    event = queue[0]
                    send(event)
                    queue.popleft()
                now = time.monotonic()
                if self._beat_now or now >= next_beat:
                    self._beat_now = False
                    next_beat = now + self.interval
                    send(self.event("worker-heartbeat", **self.worker_fields()))
                    self.heartbeats += 1
                if self._stopping:
                    send(self.event("worker-offline", **self.worker_fields()))
                    return online_sent
                self._sleep(FLUSH_EVERY)
