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


# ---------------------------------------------------------------------- watching (greenq events)
def watch(app: Any, on_event: Any, duration: float | None = None, every: float = 1.0, on_tick: Any = None) -> None:
    """Call ``on_event(event)`` for every event on the app's event exchange,
    through a queue of its own (exclusive, deleted when the watcher goes);
    ``on_tick()`` every ``every`` seconds; stop after ``duration`` seconds."""
    import uuid

    from kombu import Consumer, Queue

    exchange = event_exchange(app)
    queue = Queue(f"celeryev.{uuid.uuid4()}", exchange=exchange, routing_key="#", auto_delete=True,
                  exclusive=True, durable=False, message_ttl=5.0, expires=60.0)
    end = None if duration is None else time.monotonic() + duration

    def handle(body: Any, message: Any) -> None:
        for event in body if isinstance(body, list) else [body]:
            if isinstance(event, dict) and "type" in event:
                on_event(event)

    with app.connection() as connection:
        with Consumer(connection.channel(), queues=[queue], callbacks=[handle], no_ack=True, accept=["json"]):
            next_tick = time.monotonic()
            while end is None or time.monotonic() < end:
                now = time.monotonic()
                if on_tick is not None and now >= next_tick:
                    on_tick()
                    next_tick = now + every
                wait = max(0.01, min(next_tick - now, (end - now) if end is not None else every))
                try:
                    connection.drain_events(timeout=wait)
                except TimeoutError:
                    pass
    if on_tick is not None:
        on_tick()


class EventView:
    """What ``greenq events`` shows: workers (online, last heartbeat, active,
    processed) and the most recent tasks (state, name, id, runtime)."""

    STATES = {"task-received": "RECEIVED", "task-started": "STARTED", "task-succeeded": "SUCCESS",
              "task-failed": "FAILURE", "task-retried": "RETRY", "task-revoked": "REVOKED",
              "task-rejected": "REJECTED"}

    def __init__(self, max_tasks: int = 20) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.tasks: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.max_tasks = max_tasks

    def update(self, event: dict[str, Any]) -> None:
        kind, host = event.get("type", ""), event.get("hostname", "?")
        if kind.startswith("worker-"):
            row = self.workers.setdefault(host, {})
            row.update(online=kind != "worker-offline", seen=time.time(), freq=event.get("freq", 2.0),
                       active=event.get("active", row.get("active")), processed=event.get("processed",
                                                                                          row.get("processed")))
        elif kind in self.STATES and event.get("uuid"):
            task = self.tasks.pop(event["uuid"], {"name": None, "runtime": None})
            task.update(state=self.STATES[kind], worker=host, at=event.get("timestamp"))
            task["name"] = event.get("name") or task["name"]
            task["runtime"] = event.get("runtime", task["runtime"])
            self.tasks[event["uuid"]] = task
            while len(self.tasks) > self.max_tasks:
                self.tasks.popitem(last=False)

    def render(self) -> str:
        now = time.time()
        lines = [f"greenq events -- {time.strftime('%H:%M:%S')}", "", "workers:"]
        for host, row in sorted(self.workers.items()):
            age = now - row["seen"]
            alive = row["online"] and age < 2 * row.get("freq", 2.0)
            lines.append(f"  {host:<40} {'ONLINE ' if alive else 'OFFLINE'}  heartbeat {age:4.1f}s ago  "
                         f"active {row.get('active') or 0:<5} processed {row.get('processed') or 0}")
        if not self.workers:
            lines.append("  (none yet: workers send a heartbeat every 2 s)")
        lines += ["", "recent tasks:"]
        for task_id, task in reversed(self.tasks.items()):
            runtime = f"{task['runtime']:.3f}s" if isinstance(task.get("runtime"), (int, float)) else ""
            lines.append(f"  {task['state']:<9} {task.get('name') or '?':<40} {task_id}  {runtime}")
        if not self.tasks:
            lines.append("  (none yet: task events need -E or `greenq control enable_events`)")
        return "\n".join(lines)

    def line(self, event: dict[str, Any]) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.get("timestamp", time.time())))
        fields = {k: v for k, v in event.items() if k not in ("type", "hostname", "timestamp", "utcoffset", "pid",
                                                               "clock", "sw_ident", "sw_ver", "sw_sys")}
        text = " ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
        return f"{stamp} {event.get('hostname', '?')} {event.get('type')} {text}"
