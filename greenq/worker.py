"""The worker: one control loop that owns the consuming channel.

Read this file top to bottom to follow a message::

    on_message(message)
        request = protocol.decode(message)       bad input -> reject, log why, carry on
        decision = strategy.decide(request, now) revoked? expired? not yet due?
            REVOKED / EXPIRED -> ack, store REVOKED
            WAIT(until)       -> ETA heap (QoS + 1 while held); due past the horizon,
                                 or the heap at worker_eta_task_limit: parked broker-side, acked
            RUN               -> rate limit: no token yet -> waits in its bucket (QoS + 1 while held)
                                 dispatch: a free slot gets it, else it waits in `ready`
    loop: outcomes from slots -> ack / reject / requeue; due ETA entries and
          requests whose token has come -> decide again

Pool slots (green threads, threads) run :class:`greenq.execute.Tracer` and
hand back an :class:`~greenq.execute.Outcome`; they never ack.  Requests for
child processes (every request with ``-P prefork``; CPU-bound ones with
``--cpu-pool N``, see :mod:`greenq.offload`) are submitted to
``self.processes`` instead, wait in ``cpu_ready`` while every child is busy,
and hand back their outcome the same way.  Acks happen
here, in the loop, which polls the broker with a short timeout whenever
there is work in flight so outcomes are acted on within a few milliseconds.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from kombu.clocks import LamportClock

from greenq import signals
from greenq.exceptions import (
    ConfigurationError,
    ContentDisallowed,
    InvalidMessage,
    MessageTooLarge,
    NotRegistered,
)
from greenq.execute import ACK, REQUEUE, Outcome, Tracer
from greenq.parking import PROMOTE_AHEAD, PROMOTE_EVERY, Parking, horizon, parking_for
from greenq.pools import create_pool, default_concurrency
from greenq.protocol import Request, decode, nodename
from greenq.ratelimit import RateLimiter
from greenq.scheduler import EtaHeap
from greenq.state import StateDB, WorkerState
from greenq.strategy import EXPIRED, REVOKED, RUN, WAIT, decide

if TYPE_CHECKING:
    from kombu import Connection, Consumer

    from greenq.app import App
    from greenq.pools.base import BasePool
    from greenq.pools.prefork import ProcessPool

logger = logging.getLogger("greenq.worker")

PREFETCH_COUNT_MAX = 0xFFFF  # above this AMQP means "unlimited": never send it
BUSY_TICK = 0.005            # seconds: loop period while outcomes may be waiting
RUNNING_TICK = 0.05          # seconds: while only early-acked tasks run
IDLE_TICK = 0.25             # seconds: nothing in flight (also how soon a handed-over change is applied)
EXIT_STUCK = 70              # exit code: a task stuck past its hard limit held the hub (EX_SOFTWARE)


def expand_hostname(name: str | None) -> str:
    """``-n`` value with ``%h`` (host), ``%n`` (short host), ``%d`` (domain), ``%p`` (pid)."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    if not name:
        return nodename("greenq", host)
    expanded = (name.replace("%h", host).replace("%n", short).replace("%d", domain)
                .replace("%p", str(os.getpid())))
    return expanded if "@" in expanded else f"{expanded}@{host}"


class Worker:
    """A greenq worker.  ``Worker(app, pool="gevent", concurrency=1000).start()``.

    Args:
        pool: gevent, eventlet, threads, solo or prefork.  A green pool needs
            the process patched first (the ``greenq`` command does it).
        concurrency: slots; default 1000 for green pools, CPU count otherwise.
        queues: names to consume (``-Q``); default every queue the app knows.
        exclude_queues: names not to consume (``-X``).
        hostname: node name (``-n``), e.g. ``feeds@%h``.
        prefetch_multiplier: messages reserved per slot (``--prefetch-multiplier``).
        time_limit, soft_time_limit: defaults for tasks that set none.
        send_events: send task events (``-E``).
        shutdown_timeout: warm-shutdown deadline for running tasks, seconds.
        cpu_pool: child processes for CPU-bound tasks (``--cpu-pool``); 0: none.
        cpu_queues: queues whose tasks are CPU-bound (``--cpu-queues``).
        pool_options: ``max_tasks_per_child``, ``max_memory_per_child`` (KiB),
            ``start_method`` for child processes.
        state_db: file keeping the revoked ids across restarts (``--statedb``).
    """

    def __init__(self, app: "App", *, pool: str = "threads", concurrency: int | None = None,
                 queues: Sequence[str] | None = None, exclude_queues: Sequence[str] | None = None,
                 hostname: str | None = None, prefetch_multiplier: int | None = None,
                 time_limit: float | None = None, soft_time_limit: float | None = None,
                 send_events: bool | None = None, shutdown_timeout: float | None = None,
                 install_signal_handlers: bool = True, pool_options: dict[str, Any] | None = None,
                 cpu_pool: int | None = None, cpu_queues: Sequence[str] | None = None,
                 state_db: str | None = None) -> None:
        conf = app.conf
        self.app = app
        self.pool_name = pool
        self.concurrency = concurrency or conf.worker_concurrency or default_concurrency(pool)
        if pool == "solo":
            self.concurrency = 1
        self.hostname = expand_hostname(hostname)
        self.prefetch_multiplier = prefetch_multiplier or conf.worker_prefetch_multiplier
        if self.prefetch_multiplier < 1:
            raise ConfigurationError(f"prefetch multiplier must be at least 1, got {self.prefetch_multiplier}")
        self.time_limit = time_limit if time_limit is not None else conf.task_time_limit
        self.soft_time_limit = soft_time_limit if soft_time_limit is not None else conf.task_soft_time_limit
        self.send_events = conf.worker_send_task_events if send_events is None else send_events
        self.shutdown_timeout = conf.worker_shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        self.install_signal_handlers = install_signal_handlers
        self.pool_options = pool_options or {}
        self.queue_names = list(queues or [])
        self.exclude_queues = list(exclude_queues or [])
        self.queues = app.queues.select(self.queue_names or None, self.exclude_queues)
        self.cpu_pool = conf.worker_cpu_pool if cpu_pool is None else cpu_pool
        self.cpu_queues = list(conf.worker_cpu_queues if cpu_queues is None else cpu_queues)

        self.state = WorkerState(conf.worker_revokes_max, conf.worker_revoke_expires)
        state_db = state_db or conf.worker_state_db
        self.state_db = StateDB(state_db) if state_db else None
        self._state_dirty = False
        self._last_state_save = 0.0
        self.eta = EtaHeap()
        self.limiter = RateLimiter(app, conf.worker_rate_limit_max_keys, conf.worker_disable_rate_limits)
        self.parking: Parking | None = None  # far-future ETAs, broker-side (greenq/parking.py)
        self.eta_horizon: float | None = None
        self.eta_limit = conf.worker_eta_task_limit
        self._last_promote = 0.0
        self._parking_error_at = 0.0
        self._eta_limit_warned = False
        self.ready: collections.deque[Request] = collections.deque()
        self.cpu_ready: collections.deque[Request] = collections.deque()  # waiting for a child process
        self.outcomes: collections.deque[Outcome] = collections.deque()
        self.calls: collections.deque[Callable[[], Any]] = collections.deque()
        self.accept = frozenset(_content_types(conf.accept_content))
        self.max_message_size = conf.task_message_max_size

        self.pool: BasePool | None = None
        self.processes: ProcessPool | None = None
        self.connection: Connection | None = None
        self.consumer: Consumer | None = None
        self.tracer: Tracer | None = None
        self.clock = LamportClock()  # shared by events and remote control (Celery's `clock`)
        self.events: Any = None   # greenq.events: task and worker events, heartbeats
        self.control: Any = None  # greenq.control: the remote-control thread
        self.generation = 0
        self.late_ack_running = 0  # running tasks whose ack waits for their outcome
        self.prefetch_count = 0
        self._prefetch_wanted = 0
        self._stop: str | None = None  # None, "warm" or "cold"
        self._last_heartbeat_check = 0.0
        self._last_cleanup = 0.0
        self.started = False

    def __repr__(self) -> str:
        return f"<Worker {self.hostname} -P {self.pool_name} -c {self.concurrency}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Run until shutdown (a signal, ``stop()``, or the ``shutdown`` command)."""
        app = self.app
        app._concurrency_hint = self.concurrency
        app.import_default_modules()
        self.limiter.check()
        if self.state_db is not None:
            loaded = self.state_db.load(self.state, self.clock)
            logger.info("%s: state db %s: %d revoked id(s) loaded", self.hostname, self.state_db.path, loaded)
        signals.worker_init.send(sender=self, worker=self)
        extra: dict[str, Any] = {}
        if self.pool_name == "prefork":
            extra = {"app": app, "time_limit": self.time_limit, "soft_time_limit": self.soft_time_limit}
        elif self.pool_name in ("gevent", "eventlet"):
            extra = {"blocking_threshold": app.conf.worker_blocking_threshold,
                     "stuck_exit_after": app.conf.worker_stuck_task_exit_after}
        self.pool = create_pool(self.pool_name, self.concurrency, **extra, **self.pool_options)
        self.pool.start()
        monitor = getattr(self.pool, "monitor", None)
        if monitor is not None:
            monitor.on_stuck = self.on_stuck_task
        self.tracer = Tracer(app, self.pool, self.hostname, emit=self.emit_task_event,
                             time_limit=self.time_limit, soft_time_limit=self.soft_time_limit)
        self.processes = self.start_processes()
        self.parking = parking_for(app)
        self.eta_horizon = horizon(app)
        if self.pool_name != "prefork":
            signals.worker_process_init.send(sender=self)
        self._cleanup_results()
        self.connect()
        self.start_events()
        self.start_control()
        if self.install_signal_handlers:
            self._install_signal_handlers()
        self.started = True
        logger.info("%s ready: -P %s -c %d, queues %s, broker %s", self.hostname, self.pool_name,
                    self.concurrency, ",".join(q.name for q in self.queues), app.broker_url_for_display())
        signals.worker_ready.send(sender=self, worker=self)
        try:
            self.loop()
        finally:
            self.shutdown()

    def start_events(self) -> None:
        """The events thread (greenq/events.py): heartbeats always, task events with -E."""
        if not self.app.conf.worker_send_events:
            return
        from greenq.events import EventDispatcher
        self.events = EventDispatcher(self)
        self.events.start()

    def start_control(self) -> None:
        """The remote-control thread (greenq/control.py), unless ``worker_enable_remote_control`` is off."""
        if not self.app.conf.worker_enable_remote_control:
            return
        from greenq.control import ControlPlane
        self.control = ControlPlane(self)
        self.control.start()

    def stop(self, cold: bool = False) -> None:
        """Ask the loop to shut down (warm: let running tasks finish)."""
        if cold or self._stop is not None:
            self._stop = "cold"
        else:
            self._stop = "warm"

    def start_processes(self) -> "ProcessPool | None":
        """Child processes for requests that must not run here: every request
        with -P prefork, CPU-bound ones with --cpu-pool N (greenq.offload)."""
        from greenq import offload
        if self.pool_name == "prefork":
            return self.pool.processes  # type: ignore[union-attr]
        if not self.cpu_pool:
            offload.warn_about_cpu_tasks(self.app, self.pool_name, [q.name for q in self.queues])
            return None
        from greenq.pools.prefork import ProcessPool
        processes = ProcessPool(self.app, self.cpu_pool, takes=offload.CpuBound(self.app, self.cpu_queues),
                                time_limit=self.time_limit, soft_time_limit=self.soft_time_limit, name="cpu",
                                nice=self.app.conf.worker_cpu_pool_nice,
                                **offload.process_pool_options(self.pool_options))
        processes.start()
        return processes

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if signum == signal.SIGQUIT or self._stop is not None:
                logger.warning("%s: cold shutdown (%s): running tasks are requeued now", self.hostname, name)
                self._stop = "cold"
            else:
                logger.warning("%s: warm shutdown (%s): waiting up to %.0fs for running tasks; "
                               "send it again for a cold shutdown", self.hostname, name, self.shutdown_timeout)
                self._stop = "warm"

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, on_signal)

    # ------------------------------------------------------------------ broker
    def connect(self) -> None:
        """Connect (retrying with backoff) and start consuming."""
        from kombu import Consumer

        conf = self.app.conf
        connection = self.app.connection_for_read()

        def on_error(exc: Exception, interval: float) -> None:
            logger.error("cannot connect to %s: %s; trying again in %.1fs",
                         self.app.broker_url_for_display(), exc, interval)

        connection.ensure_connection(
            errback=on_error, interval_start=0.5, interval_step=1.0, interval_max=10.0,
            max_retries=(conf.broker_connection_max_retries
                         if conf.broker_connection_retry_on_startup or self.generation else 0))
        channel = connection.channel()
        consumer = Consumer(channel, queues=self.queues, on_message=self.on_message, auto_declare=True)
        self.connection = connection
        self.consumer = consumer
        if self.parking is not None:
            try:
                self.parking.setup(connection, self.queues)
            except Exception as exc:
                logger.error("cannot set up ETA parking on %s (%r): far-future ETA tasks are held in memory",
                             self.app.broker_url_for_display(), exc)
                self.parking = None
        self.generation += 1
        self.prefetch_count = 0
        self.update_prefetch()
        self.apply_prefetch()
        consumer.consume()

    def update_prefetch(self) -> None:
        """Prefetch = slots x multiplier, plus one per message held for its ETA
        or its rate-limit token; bounded.  Only noted here: the loop applies
        it (:meth:`apply_prefetch`) between polls, because a QoS change sent
        from inside a message callback would nest in the broker client's
        own read loop."""
        held_eta = len(self.eta) if self.eta_limit is None else min(len(self.eta), self.eta_limit)
        wanted = self.concurrency * self.prefetch_multiplier + held_eta + self.limiter.held
        self._prefetch_wanted = max(1, min(wanted, PREFETCH_COUNT_MAX))

    def apply_prefetch(self) -> None:
        wanted = self._prefetch_wanted
        if wanted != self.prefetch_count and self.consumer is not None:
            # global: on RabbitMQ a per-consumer limit only applies to consumers
            # started after it, so a change would not reach the running one
            self.consumer.qos(prefetch_count=wanted, apply_global=True)
            self.prefetch_count = wanted

    def reconnect(self, exc: BaseException) -> None:
        logger.error("%s: lost the broker connection (%r); reconnecting", self.hostname, exc)
        # Messages held here belong to the dead channel: the broker redelivers them.
        self.ready.clear()
        self.cpu_ready.clear()
        self.eta.drain()
        self.limiter.drain()
        self._close_connection()
        self.connect()
        logger.info("%s: consuming again", self.hostname)

    def _close_connection(self) -> None:
        connection, self.connection, self.consumer = self.connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception as exc:  # closing a dead connection may fail; it is dead either way
                logger.debug("closing the old connection failed: %r", exc)

    # ------------------------------------------------------------------ the loop
    def loop(self) -> None:
        assert self.connection is not None
        errors = self.connection.connection_errors + self.connection.channel_errors + (OSError,)
        while self._stop is None:
            self.run_pending_calls()
            self.process_outcomes()
            self.release_due(time.time())
            try:
                self.apply_prefetch()
                self.connection.drain_events(timeout=self.tick())
            except TimeoutError:
                pass
            except errors as exc:
                if self._stop is not None:
                    break
                self.reconnect(exc)
                errors = self.connection.connection_errors + self.connection.channel_errors + (OSError,)
            self.housekeeping()

    def tick(self) -> float:
        """How long the next broker poll may block."""
        if self.outcomes or self.calls:
            return 0.0001
        if self.ready or self.cpu_ready or self.late_ack_running:
            timeout = BUSY_TICK
        elif self.state.active:
            timeout = RUNNING_TICK
        else:
            timeout = IDLE_TICK
        due = self.eta.next_due()
        if due is not None:
            timeout = min(timeout, max(due - time.time(), 0.0001))
        token_in = self.limiter.next_due()
        if token_in is not None:
            timeout = min(timeout, max(token_in, 0.0001))
        return timeout

    def housekeeping(self) -> None:
        self.promote_parked()
        now = time.monotonic()
        if self._state_dirty and now - self._last_state_save >= 1.0:
            self.save_state()
        if now - self._last_heartbeat_check >= 1.0:
            self._last_heartbeat_check = now
            try:
                self.connection.heartbeat_check()  # type: ignore[union-attr]
            except Exception as exc:  # reported again, and acted on, by the next drain
                logger.debug("heartbeat check failed: %r", exc)
            if now - self._last_cleanup >= min(max((self.app.conf.result_expires or 3600) / 10, 60), 3600):
                self._cleanup_results()

    def save_state(self) -> None:
        """Write the revoked set to ``--statedb`` (a second after a revoke at most, and at shutdown)."""
        self._last_state_save = time.monotonic()
        if self.state_db is None:
            return
        self._state_dirty = False
        try:
            self.state_db.save(self.state, self.clock)
        except OSError as exc:
            self._state_dirty = True
            logger.error("%s: could not write the state db %s: %s", self.hostname, self.state_db.path, exc)

    def _cleanup_results(self) -> None:
        self._last_cleanup = time.monotonic()
        try:
            removed = self.app.backend.cleanup()
        except Exception as exc:  # results can still be stored; cleanup will be tried again
            logger.warning("result cleanup failed: %r", exc)
            return
        if removed:
            logger.info("removed %d expired results", removed)

    def run_pending_calls(self) -> None:
        """Run state changes handed over from other threads (remote control)."""
        calls = self.calls
        while calls:
            fn = calls.popleft()
            try:
                fn()
            except Exception:
                logger.exception("a remote-control change failed")

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` in the control loop; callable from any thread."""
        self.calls.append(fn)

    # ------------------------------------------------------------------ messages
    def on_message(self, message: Any) -> None:
        try:
            request = decode(message, accept=self.accept, max_size=self.max_message_size)
        except (InvalidMessage, ContentDisallowed, MessageTooLarge) as exc:
            self.on_bad_message(message, exc)
            return
        task = self.app.tasks.get(request.name)
        if task is None:
            self.on_unknown_task(message, request)
            return
        request.task = task
        request.acks_late = task.acks_late
        request.hostname = self.hostname
        request.generation = self.generation
        signals.task_received.send(sender=self, request=request)
        self.emit_task_event("task-received", request, name=request.name, args=request.argsrepr,
                             kwargs=request.kwargsrepr, root_id=request.root_id, parent_id=request.parent_id,
                             retries=request.retries, eta=request.headers.get("eta"),
                             expires=request.headers.get("expires"))
        self.decide_and_act(request, time.time())

    def decide_and_act(self, request: Request, now: float) -> None:
        decision = decide(request, now, self.state.is_revoked)
        action = decision.action
        if action == RUN:
            if not request.admitted:
                if not self.limiter.admit(request):
                    self.update_prefetch()  # held for its token: make room for other task types
                    return
                request.admitted = True
            self.dispatch(request)
        elif action == WAIT:
            until: float = decision.until  # type: ignore[assignment]
            if self.should_park(until, now) and self.park(request, until):
                return
            self.eta.hold(request, until)
            self.update_prefetch()
        elif action == REVOKED:
            self.on_revoked(request, expired=False)
        elif action == EXPIRED:
            self.on_revoked(request, expired=True)

    def should_park(self, until: float, now: float) -> bool:
        ahead = until - now
        if ahead <= PROMOTE_AHEAD * 2:
            return False  # due in moments: hold it, whatever the limit
        if self.eta_horizon is not None and ahead > self.eta_horizon:
            return self.parking is not None
        if self.eta_limit is not None and len(self.eta) >= self.eta_limit:
            if self.parking is None and not self._eta_limit_warned:
                self._eta_limit_warned = True
                logger.warning("%s: %d ETA tasks held (worker_eta_task_limit) and this broker has no parking: "
                               "prefetch stops growing, so more ETA tasks wait in the broker", self.hostname,
                               self.eta_limit)
            return self.parking is not None
        return False

    def park(self, request: Request, until: float) -> bool:
        """Store ``request`` broker-side until shortly before ``until``, then ack it.
        False if the store failed (the caller holds it instead)."""
        try:
            self.parking.park(request, until)  # type: ignore[union-attr]
        except Exception as exc:
            now = time.monotonic()
            if now - self._parking_error_at > 60:
                self._parking_error_at = now
                logger.error("%s: cannot park task %s[%s] (%r): holding it in memory", self.hostname,
                             request.name, request.id, exc)
            return False
        self.ack(request)
        self.state.parked += 1
        return True

    def promote_parked(self) -> None:
        """Publish parked tasks that are nearly due again (any worker may; each task once)."""
        now = time.time()
        if self.parking is None or now - self._last_promote < PROMOTE_EVERY:
            return
        self._last_promote = now
        try:
            promoted = self.parking.promote(now)
        except Exception as exc:
            logger.error("%s: promoting parked ETA tasks failed (%r); trying again in %.0fs", self.hostname,
                         exc, PROMOTE_EVERY)
            return
        if promoted:
            logger.debug("%s: %d parked ETA task(s) published again", self.hostname, promoted)

    def dispatch(self, request: Request) -> None:
        if self.processes is not None and self.processes.takes(request):
            if self.processes.free_count() > 0:
                self.start_task(request)
            else:
                self.cpu_ready.append(request)
        elif self.pool.free_count() > 0:  # type: ignore[union-attr]
            self.start_task(request)
        else:
            self.ready.append(request)

    def start_task(self, request: Request) -> None:
        if request.acks_late:
            self.late_ack_running += 1
        else:
            self.ack(request)
        request.time_start = time.time()
        self.state.active[request.id] = request
        processes = self.processes
        if processes is not None and processes.takes(request):
            request.handle = processes.submit(request, self.tracer, self.outcomes.append)  # type: ignore[arg-type]
        else:
            request.handle = self.pool.spawn(self.run_in_slot, request)  # type: ignore[union-attr]

    def run_in_slot(self, request: Request) -> None:
        """Runs in a pool slot: execute, then hand the outcome to the loop."""
        self.outcomes.append(self.tracer.run(request))  # type: ignore[union-attr]

    def release_due(self, now: float) -> None:
        """ETA entries now due, and requests whose rate-limit token has come,
        are decided again (revoked or expired meanwhile? skipped)."""
        due = self.eta.pop_due(now)
        if due:
            for request in due:
                self.decide_and_act(request, now)
            self.update_prefetch()
        if self.limiter.held:
            tokened = self.limiter.release()
            if tokened:
                for request in tokened:
                    request.admitted = True
                    self.decide_and_act(request, now)
                self.update_prefetch()

    def process_outcomes(self) -> None:
        outcomes = self.outcomes
        while outcomes:
            outcome = outcomes.popleft()
            request = outcome.request
            if self.state.active.get(request.id) is request:
                del self.state.active[request.id]
            self.state.total[request.name] += 1
            if request.acks_late:
                self.late_ack_running -= 1
            if request.acks_late and not request.acknowledged:
                if outcome.action == ACK:
                    self.ack(request)
                else:
                    self.reject(request, requeue=outcome.action == REQUEUE)
            elif outcome.action == REQUEUE:
                self.republish(request)
        pool = self.pool
        while self.ready and pool.free_count() > 0:  # type: ignore[union-attr]
            self.start_task(self.ready.popleft())
        while self.cpu_ready and self.processes.free_count() > 0:  # type: ignore[union-attr]
            self.start_task(self.cpu_ready.popleft())

    # ------------------------------------------------------------------ acks
    def ack(self, request: Request) -> None:
        if request.generation != self.generation:
            logger.debug("task %s[%s]: not acked, its connection is gone (the broker redelivers it)",
                         request.name, request.id)
            return
        request.message.ack()
        request.acknowledged = True

    def reject(self, request: Request, requeue: bool) -> None:
        if request.generation != self.generation:
            return
        request.message.reject(requeue=requeue)
        request.acknowledged = True

    def republish(self, request: Request, **headers: Any) -> None:
        """Send an already-acked message again, unchanged but for ``headers``."""
        delivery = request.delivery_info
        properties = {k: v for k, v in request.message.properties.items()
                      if k in ("correlation_id", "reply_to", "priority")}
        with self.app.producer_pool.acquire(block=True, timeout=self.app.conf.broker_pool_acquire_timeout) as p:
            p.publish(request.body, exchange=delivery.get("exchange") or "",
                      routing_key=delivery.get("routing_key") or self.app.conf.task_default_queue,
                      content_type=request.content_type, content_encoding=request.content_encoding,
                      headers={**request.headers, **headers}, retry=True, **properties)

    # ------------------------------------------------------------------ bad input
    def on_bad_message(self, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        task_id = headers.get("id") if isinstance(headers.get("id"), str) else None
        logger.error("rejected message %s (task %r): %s", task_id or message.delivery_tag,
                     headers.get("task"), exc)
        self._reject_message(message)
        self.state.rejected += 1
        signals.task_rejected.send(sender=self, message=message, exc=exc)
        if task_id:
            self.emit_task_event("task-rejected", Request(id=task_id, name=headers.get("task")), requeue=False)
            self._store_failure(task_id, exc)

    def on_unknown_task(self, message: Any, request: Request) -> None:
        exc = NotRegistered(
            f"task {request.name!r} is not registered in this worker: check that the module defining it "
            "is imported by -A or include, and that the worker runs the current code")
        logger.error("rejected task %s[%s]: not registered (known: %s)", request.name, request.id,
                     ", ".join(self.app.tasks.regular()[:10]) or "none")
        self._reject_message(message)
        self.state.rejected += 1
        signals.task_unknown.send(sender=self, name=request.name, id=request.id, message=message, exc=exc)
        self.emit_task_event("task-rejected", request, requeue=False)
        self._store_failure(request.id, exc)

    def _reject_message(self, message: Any) -> None:
        try:
            message.reject(requeue=False)
        except Exception as exc:  # the message is dropped either way; the worker must go on
            logger.warning("could not reject message %s: %r", message.delivery_tag, exc)

    def _store_failure(self, task_id: str, exc: Exception) -> None:
        """Let a client waiting on this id see the error instead of waiting for ever."""
        try:
            self.app.backend.mark_as_failure(task_id, exc)
        except Exception as store_exc:  # no backend configured, or it is down
            logger.debug("could not store the failure of %s: %r", task_id, store_exc)

    def on_revoked(self, request: Request, expired: bool) -> None:
        logger.info("task %s[%s] %s: skipped", request.name, request.id, "expired" if expired else "revoked")
        self.ack(request)
        try:
            self.app.backend.mark_as_revoked(request.id, "expired" if expired else "revoked", request=request)
        except Exception as exc:
            logger.debug("could not store REVOKED for %s: %r", request.id, exc)
        signals.task_revoked.send(sender=request.task, request=request, terminated=False, signum=None,
                                  expired=expired)
        self.emit_task_event("task-revoked", request, terminated=False, signum=None, expired=expired)

    # ------------------------------------------------------------------ run-time changes
    # Run in the worker's main thread: remote control (greenq.control) hands
    # them over through the hub's thread-safe callback on green pools -- so
    # they change memory only and never block -- or through call_soon()
    # otherwise.  Work on the consuming channel (acks) goes to the loop with
    # call_soon().
    def revoke(self, task_ids: Iterable[str], terminate: bool = False,
               signal_name: str | None = None, parked_removed: bool = False) -> list[str]:
        """Revoke ``task_ids``: held or queued ones are skipped when they come up;
        with ``terminate`` the running ones are ended now.  Returns the ids
        that were running and were sent the termination.

        ``parked_removed``: the caller has taken them out of ETA parking
        itself (the control thread does, so that this never waits on the broker).
        """
        ids = list(task_ids)
        self.state.revoked.update(ids)
        self._state_dirty = True
        settle = [request for task_id in ids for request in self.eta.discard(task_id)]
        if self.limiter.held:  # and those waiting for a rate-limit token
            settle.extend(self.limiter.discard(set(ids)))
        if settle:  # held ones: REVOKED now, not at their ETA
            self.call_soon(lambda: self._settle_revoked(settle))
        if self.parking is not None and not parked_removed:
            try:
                for snap in self.parking.discard(ids):
                    self.on_parked_revoked(snap)
            except Exception as exc:  # they are still skipped when they come back
                logger.warning("could not remove revoked tasks from ETA parking: %r", exc)
        terminated: list[str] = []
        if terminate:
            for task_id in ids:
                running = self.state.active.get(task_id)
                if running is not None and self.terminate_request(running, signal_name):
                    terminated.append(task_id)
        return terminated

    def terminate_request(self, request: Request, signal_name: str | None = None) -> bool:
        """End a running request (revoke with terminate); True if it was signalled."""
        from greenq.exceptions import Terminated
        if request.handle is None:
            return False
        processes = self.processes
        if processes is not None and processes.takes(request) and self.pool_name != "prefork":
            return bool(processes.kill(request.handle, Terminated))
        return bool(self.pool.kill(request.handle, Terminated))  # type: ignore[union-attr]

    def _settle_revoked(self, requests: list[Request]) -> None:
        for request in requests:
            self.on_revoked(request, expired=False)
        self.update_prefetch()

    def add_consumer(self, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                     routing_key: str | None = None) -> bool:
        """Start consuming ``queue`` (declared as needed); False if already consuming it."""
        if any(q.name == queue for q in self.queues):
            return False
        from kombu import Exchange, Queue
        if exchange:
            declared = Queue(queue, Exchange(exchange, type=exchange_type or "direct"), routing_key or queue)
        else:
            known = {q.name: q for q in self.app.queues.select(None, [])}
            declared = known.get(queue) or Queue(queue, routing_key=routing_key or queue)
        self.queues = [*self.queues, declared]
        self.call_soon(lambda: self._consume_queue(declared))
        return True

    def _consume_queue(self, queue: Any) -> None:
        if self.consumer is None:
            return  # reconnecting: connect() consumes self.queues
        self.consumer.add_queue(queue)
        self.consumer.consume()
        if self.parking is not None and self.connection is not None:
            self.parking.setup(self.connection, [queue])
        logger.info("%s: now consuming from %s", self.hostname, queue.name)

    def cancel_consumer(self, queue: str) -> bool:
        """Stop consuming ``queue``; False if it was not consumed."""
        if not any(q.name == queue for q in self.queues):
            return False
        self.queues = [q for q in self.queues if q.name != queue]

        def cancel() -> None:
            if self.consumer is not None:
                self.consumer.cancel_by_queue(queue)
            logger.info("%s: no longer consuming from %s", self.hostname, queue)

        self.call_soon(cancel)
        return True

    def resize_pool(self, delta: int) -> int:
        """Grow (delta > 0) or shrink the pool; returns the new number of slots."""
        pool = self.pool
        assert pool is not None
        limit = pool.grow(delta) if delta > 0 else pool.shrink(-delta) if delta < 0 else pool.limit
        self.concurrency = limit
        self.update_prefetch()
        return limit

    def on_parked_revoked(self, snap: dict[str, Any]) -> None:
        request = Request(id=snap["id"], name=snap["task"], headers=snap.get("headers") or {},
                          task=self.app.tasks.get(snap["task"]))
        try:
            self.app.backend.mark_as_revoked(request.id, "revoked", request=request)
        except Exception as exc:
            logger.debug("could not store REVOKED for %s: %r", request.id, exc)
        if request.task is not None:
            signals.task_revoked.send(sender=request.task, request=request, terminated=False, signum=None,
                                      expired=False)
        self.emit_task_event("task-revoked", request, terminated=False, signum=None, expired=False)

    def set_rate_limit(self, task_name: str, rate: Any) -> None:
        """Change ``task_name``'s rate limit (``"10/s"``, a number, None for none).

        Raises:
            NotRegistered: no such task here.
            ConfigurationError: ``rate`` is not a rate.
        """
        from greenq.ratelimit import parse_rate
        task = self._registered(task_name)
        parse_rate(rate)
        task.rate_limit = rate
        waiting = self.limiter.changed(task_name)
        if waiting:  # they waited under the old rate: the loop asks again
            self.call_soon(lambda: self._readmit(waiting))

    def _readmit(self, requests: list[Request]) -> None:
        now = time.time()
        for request in requests:
            request.admitted = False
            self.decide_and_act(request, now)
        self.update_prefetch()

    def set_time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None) -> None:
        """Change ``task_name``'s time limits, in seconds (None: no limit).

        Raises:
            NotRegistered: no such task here.
            ConfigurationError: a limit is negative, or soft is not below hard.
        """
        task = self._registered(task_name)
        for label, value in (("soft", soft), ("hard", hard)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigurationError(f"{label} time limit must be a positive number of seconds, got {value!r}")
        if soft is not None and hard is not None and soft >= hard:
            raise ConfigurationError(f"soft time limit ({soft}) must be less than the hard one ({hard})")
        task.soft_time_limit = soft
        task.time_limit = hard

    def scheduled(self, parked: bool = True) -> list[dict[str, Any]]:
        """ETA/countdown tasks held here, then those parked broker-side (where
        the broker can list them), in ``inspect scheduled``'s shape, soonest first."""
        from datetime import datetime, timezone
        held = [{"eta": datetime.fromtimestamp(until, timezone.utc).isoformat(),
                 "priority": request.priority or 0, "request": request.info()}
                for until, request in self.eta]
        if parked and self.parking is not None:
            try:
                held.extend(self.parking.scheduled())
            except Exception as exc:
                logger.warning("could not list parked ETA tasks: %r", exc)
        return held

    def _registered(self, task_name: str) -> Any:
        task = self.app.tasks.get(task_name)
        if task is None:
            raise NotRegistered(f"task {task_name!r} is not registered in this worker")
        return task

    def on_stuck_task(self, request: Any) -> None:
        """Called from the hub monitor's thread: ``request`` ran past its hard
        limit inside a call nothing can interrupt, and the hub is still held.

        Nothing in this process can run until that call returns, so the
        worker stores the failure and exits (code ``EXIT_STUCK``) for its
        supervisor to start a fresh one.  Late-acked messages, this one
        included, go back to the queue when the broker sees the connection close.
        """
        from greenq.exceptions import TimeLimitExceeded
        name, task_id = getattr(request, "name", "?"), getattr(request, "id", None)
        logger.critical("%s: task %s[%s] is stuck past its hard time limit in a call that cannot be interrupted "
                        "(a blocking C call?) and holds the hub: storing its failure and exiting with code %d "
                        "so that a supervisor restarts the worker (worker_stuck_task_exit_after)",
                        self.hostname, name, task_id, EXIT_STUCK)
        if task_id and request is not None and not getattr(request, "ignore_result", False):
            self._store_failure(task_id, TimeLimitExceeded(
                f"task {name} ran past its hard time limit in a call that could not be interrupted; "
                "the worker was restarted"))
        logging.shutdown()
        os._exit(EXIT_STUCK)

    # ------------------------------------------------------------------ events
    def emit_task_event(self, kind: str, request: Request, **fields: Any) -> None:
        if self.events is not None and self.send_events:
            self.events.task_event(kind, request, **fields)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        cold = self._stop == "cold"
        logger.info("%s: shutting down (%s)", self.hostname, "cold" if cold else "warm")
        if self.consumer is not None:
            try:
                self.consumer.cancel()
            except Exception as exc:  # the connection may already be gone
                logger.debug("cancel failed: %r", exc)
        waiting = list(self.ready) + list(self.cpu_ready) + self.eta.drain() + self.limiter.drain()
        self.ready.clear()
        self.cpu_ready.clear()
        for request in waiting:  # not started: back to the broker
            self._requeue(request)
        deadline = time.monotonic() + (0.0 if cold else self.shutdown_timeout)
        while self.state.active and self._stop != "cold" and time.monotonic() < deadline:
            self.process_outcomes()
            self.pool.sleep(0.02)  # type: ignore[union-attr]
        self.process_outcomes()
        leftover = list(self.state.active.values())
        if leftover:
            logger.warning("%s: %d task(s) still running at the shutdown deadline are requeued: %s",
                           self.hostname, len(leftover), ", ".join(f"{r.name}[{r.id}]" for r in leftover[:5]))
        for request in leftover:
            self._requeue(request)
        if self.control is not None:
            self.control.stop()
        if self.events is not None:
            self.events.close()
        self._close_connection()
        if self.processes is not None and self.processes is not getattr(self.pool, "processes", None):
            self.processes.stop()  # the CPU pool; -P prefork stops its own with the pool
        if self.pool is not None:
            self.pool.stop()
        if self.parking is not None:
            self.parking.close()
        self.save_state()
        signals.worker_shutdown.send(sender=self, worker=self)
        try:
            self.app.close()
        except Exception as exc:
            logger.debug("closing the app's connections failed: %r", exc)
        logger.info("%s: stopped", self.hostname)

    def _requeue(self, request: Request) -> None:
        try:
            if request.acknowledged:
                self.republish(request)
            else:
                self.reject(request, requeue=True)
        except Exception as exc:
            logger.error("could not requeue %s[%s]: %r", request.name, request.id, exc)

    # ------------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        return {
            "total": dict(self.state.total),
            "pid": os.getpid(),
            "uptime": int(time.time() - self.state.started_at),
            "pool": self.pool.info() if self.pool is not None else {},
            "prefetch_count": self.prefetch_count,
            "broker": self.connection.info() if self.connection is not None else {},
            "rejected": self.state.rejected,
            "eta_held": len(self.eta),
            "eta_parked": self.state.parked,
            "rate_limited": self.limiter.info(),
            "ready": len(self.ready),
            "cpu_pool": (self.processes.info() if self.processes is not None and self.pool_name != "prefork"
                         else None),
            "cpu_ready": len(self.cpu_ready),
            "blocking": monitor.stats() if (monitor := getattr(self.pool, "monitor", None)) is not None else None,
        }


def _content_types(names: Iterable[str]) -> list[str]:
    from kombu.serialization import prepare_accept_content
    return list(prepare_accept_content(list(names)))
