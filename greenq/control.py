"""Remote control: the worker's control thread, its commands, and the client.

The worker side (:class:`ControlPlane`) runs in a **native OS thread** with
its own broker connection, so it answers while a task holds the gevent hub
(Celery's green pools cannot: their mailbox is consumed on the hub, and
``celery inspect ping`` gets "No nodes replied" while one task spins).  It
speaks Celery's pidbox protocol through kombu's :class:`kombu.pidbox.Mailbox`
-- broadcast exchange ``<control_exchange>.pidbox``, node queue
``<hostname>.<control_exchange>.pidbox``, replies to
``reply.<control_exchange>.pidbox`` -- so ``celery inspect``, ``celery
control`` and Flower work with greenq workers.

Commands that only read state answer from the control thread.  Commands
that change state hand a function to the worker's main thread and reply once
it has run: on a green pool through the hub's thread-safe callback (the
function runs between two green threads, so it must not block; anything
touching the consuming channel is passed on to the control loop with
``worker.call_soon``), on the other pools through the control loop.  If the
main thread does not get to it within ``APPLY_TIMEOUT`` (a task holds the
hub), the reply says so.  Terminating a task that holds the hub goes
straight in from this thread (``pool.kill_threadsafe``).

Custom commands::

    from greenq.control import control_command, inspect_command

    @inspect_command()
    def queue_lengths(state):              # greenq inspect queue_lengths
        return {"ok": ...}

    @control_command(args=[("n", int)])
    def set_batch(state, n):               # greenq control set_batch 10
        state.apply(lambda: setattr(state.worker, "batch", n))
        return {"ok": f"batch is now {n}"}

``state`` has ``worker``, ``app``, ``hostname`` and ``apply(fn)`` (run
``fn`` in the main thread and return what it returned).
"""
from __future__ import annotations

import fnmatch
import inspect as _inspect
import logging
import os
import re
import resource
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Sequence

from greenq.exceptions import ConfigurationError, GreenqError, NotRegistered

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.worker import Worker

logger = logging.getLogger("greenq.control")

APPLY_TIMEOUT = 0.8   # seconds a state change may wait for the main thread (replies within a 1 s client timeout)
KILL_AFTER = 0.3      # seconds a terminate waits for the main thread before going straight into the task
POLL = 0.25           # seconds the control thread blocks on the broker at a time
RECONNECT_MAX = 10.0  # seconds between reconnection attempts, at most
QUEUE_TTL = 300.0     # seconds a command waits in a node queue (Celery's control_queue_ttl)
QUEUE_EXPIRES = 10.0  # seconds a node queue outlives its worker (control_queue_expires)


class ControlError(GreenqError):
    """A remote-control command was refused: unknown, or bad arguments."""


# ---------------------------------------------------------------------- the command table
class Command(NamedTuple):
    name: str
    fn: Callable[..., Any]
    type: str                       # "inspect" (reads state) or "control" (changes it)
    args: Sequence[tuple[str, Any]]  # (name, type) of positional CLI arguments
    help: str


COMMANDS: dict[str, Command] = {}


def _register(type_: str, name: str | None, args: Sequence[tuple[str, Any]], help: str | None) -> Callable:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        command = name or fn.__name__
        COMMANDS[command] = Command(command, fn, type_, tuple(args), help or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return decorate


def inspect_command(name: str | None = None, args: Sequence[tuple[str, Any]] = (), help: str | None = None) -> Callable:
    """Register a command that reads worker state (``greenq inspect NAME``)."""
    return _register("inspect", name, args, help)


def control_command(name: str | None = None, args: Sequence[tuple[str, Any]] = (), help: str | None = None) -> Callable:
    """Register a command that changes worker state (``greenq control NAME``)."""
    return _register("control", name, args, help)


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


class State:
    """What a command function gets: the worker, and a way into its main thread."""

    def __init__(self, plane: "ControlPlane") -> None:
        self.plane = plane
        self.worker = plane.worker
        self.app = plane.worker.app
        self.hostname = plane.worker.hostname

    def apply(self, fn: Callable[[], Any], timeout: float = APPLY_TIMEOUT) -> Any:
        return self.plane.apply(fn, timeout)


def run_command(state: State, method: str, arguments: dict[str, Any] | None) -> Any:
    """Look the command up, check its arguments, run it.  Raises ControlError."""
    command = COMMANDS.get(method)
    if command is None:
        raise ControlError(f"unknown command {method!r}; known: {', '.join(sorted(COMMANDS))}")
    arguments = arguments or {}
    if not isinstance(arguments, dict):
        raise ControlError(f"{method}: arguments must be a mapping, got {type(arguments).__name__}")
    try:
        _inspect.signature(command.fn).bind(state, **arguments)
    except TypeError as exc:
        raise ControlError(f"{method}: {exc}") from None
    return command.fn(state, **arguments)


# ---------------------------------------------------------------------- inspect commands
def _copy(fn: Callable[[], Any]) -> Any:
    """Read structures the main thread may be changing: retry if they changed mid-copy."""
    for _ in range(10):
        try:
            return fn()
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.001)
    return fn()


@inspect_command(help="Reply 'pong'.")
def ping(state: State) -> dict[str, Any]:
    return ok("pong")


@inspect_command(help="Counters, pool, broker, prefetch, resource usage.")
def stats(state: State) -> dict[str, Any]:
    worker = state.worker
    data = _copy(worker.stats)
    data["clock"] = str(worker.clock.value)
    data["rusage"] = _rusage()
    data["pid"] = os.getpid()
    return data


def _rusage() -> dict[str, Any]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"utime": r.ru_utime, "stime": r.ru_stime, "maxrss": r.ru_maxrss, "ixrss": r.ru_ixrss,
            "idrss": r.ru_idrss, "isrss": r.ru_isrss, "minflt": r.ru_minflt, "majflt": r.ru_majflt,
            "nswap": r.ru_nswap, "inblock": r.ru_inblock, "oublock": r.ru_oublock, "msgsnd": r.ru_msgsnd,
            "msgrcv": r.ru_msgrcv, "nsignals": r.ru_nsignals, "nvcsw": r.ru_nvcsw, "nivcsw": r.ru_nivcsw}


@inspect_command(help="Tasks running now.")
def active(state: State, safe: Any = None) -> list[dict[str, Any]]:
    return _copy(lambda: [r.info() for r in list(state.worker.state.active.values())])


@inspect_command(help="Tasks received and waiting for a slot or a rate-limit token.")
def reserved(state: State) -> list[dict[str, Any]]:
    worker = state.worker
    return _copy(lambda: [r.info() for r in [*worker.ready, *worker.cpu_ready, *worker.limiter.waiting()]])


@inspect_command(help="Tasks waiting for their ETA: held here, then parked broker-side.")
def scheduled(state: State) -> list[dict[str, Any]]:
    worker = state.worker
    held = _copy(lambda: worker.scheduled(parked=False))
    parking = state.plane.parking
    if parking is not None:
        try:
            held.extend(parking.scheduled())
        except Exception as exc:
            logger.warning("could not list parked ETA tasks: %r", exc)
    return held


@inspect_command(help="Revoked task ids.")
def revoked(state: State) -> list[str]:
    return _copy(lambda: list(state.worker.state.revoked))


@inspect_command(help="Registered task names.")
def registered(state: State, taskinfoitems: Any = None) -> list[str]:
    items = taskinfoitems or ()
    names = []
    for name in state.app.tasks.regular():
        task = state.app.tasks[name]
        extra = [f"{item}={getattr(task, item)}" for item in items if getattr(task, item, None) is not None]
        names.append(f"{name} [{' '.join(extra)}]" if extra else name)
    return names


@inspect_command(help="Queues this worker consumes.")
def active_queues(state: State) -> list[dict[str, Any]]:
    return [queue.as_dict(recurse=True) for queue in list(state.worker.queues)]


@inspect_command(help="The worker's configuration (secrets masked).")
def conf(state: State, with_defaults: bool = False) -> dict[str, Any]:
    from greenq.config import mask_url
    data = state.app.conf.changes() if not with_defaults else state.app.conf.as_dict()
    out = {}
    for key, value in data.items():
        if isinstance(value, str) and "://" in value:
            value = mask_url(value)
        elif callable(value) or not _jsonable(value):
            value = repr(value)
        out[key] = value
    return out


def _jsonable(value: Any) -> bool:
    import json
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


@inspect_command(args=[("ids", str)], help="Where these task ids are: active, reserved or scheduled.")
def query_task(state: State, ids: Any = None, *args: Any) -> dict[str, Any]:
    if isinstance(ids, str):
        wanted = {ids, *args}
    else:
        wanted = set(ids or ()) | set(args)
    worker = state.worker
    found: dict[str, Any] = {}

    def look() -> None:
        for request in list(worker.state.active.values()):
            if request.id in wanted:
                found[request.id] = ["active", request.info()]
        for request in [*worker.ready, *worker.cpu_ready, *worker.limiter.waiting()]:
            if request.id in wanted:
                found[request.id] = ["reserved", request.info()]
        for _, request in worker.eta:
            if request.id in wanted:
                found[request.id] = ["scheduled", request.info()]

    _copy(look)
    return found


@inspect_command(help="The worker's Lamport clock.")
def clock(state: State) -> dict[str, Any]:
    return {"clock": state.worker.clock.value}


@inspect_command(help="Revoked ids and clock, for a worker that starts (Celery's mingle).")
def hello(state: State, from_node: str | None = None, revoked: Any = None) -> dict[str, Any] | None:
    worker = state.worker
    if from_node == worker.hostname:
        return None
    if isinstance(revoked, dict) and revoked:
        entries = {str(k): float(v) for k, v in revoked.items() if isinstance(v, (int, float))}
        state.apply(lambda: worker.state.revoked.merge(entries))
    return {"revoked": _copy(worker.state.revoked.as_dict), "clock": worker.clock.forward()}


@inspect_command(help="A bug report: versions and settings.")
def report(state: State) -> dict[str, Any]:
    import platform

    import kombu

    import greenq
    lines = [f"greenq {greenq.__version__}, kombu {kombu.__version__}, Python {platform.python_version()} "
             f"({platform.system()} {platform.machine()})",
             f"worker {state.hostname}: -P {state.worker.pool_name} -c {state.worker.concurrency}",
             f"broker {state.app.broker_url_for_display()}"]
    lines += [f"{k} = {v!r}" for k, v in sorted(conf(state).items())]
    return ok("\n".join(lines))


# ---------------------------------------------------------------------- control commands
def _ids(task_id: Any) -> list[str]:
    if isinstance(task_id, str):
        ids = [task_id]
    elif isinstance(task_id, (list, tuple)):
        ids = list(task_id)
    else:
        ids = []
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ControlError(f"task_id must be a task id or a list of them, got {task_id!r}")
    return ids


def _signal_name(signal: Any) -> str | None:
    if signal is None:
        return None
    import signal as signals
    name = str(signal).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if not hasattr(signals, name):
        raise ControlError(f"unknown signal {signal!r}")
    return name


@control_command(args=[("task_id", str)], help="Revoke tasks: skipped when they come up (terminate: end them now).")
def revoke(state: State, task_id: Any, terminate: bool = False, signal: Any = None, **kwargs: Any) -> dict[str, Any]:
    ids = _ids(task_id)
    signal_name = _signal_name(signal)
    worker = state.worker
    change = lambda: worker.revoke(ids, terminate=terminate, signal_name=signal_name,  # noqa: E731
                                   parked_removed=True)
    try:
        terminated = state.apply(change, timeout=KILL_AFTER if terminate else APPLY_TIMEOUT)
    except ControlError:
        if not terminate:
            raise
        # a task holds the hub (it never yields): straight into it from this thread;
        # the revoke itself is applied once the main thread is free again
        terminated = []
        for task_id_ in ids:
            running = worker.state.active.get(task_id_)
            if running is not None and running.handle is not None and worker.pool is not None \
                    and not _in_child(worker, running) and worker.pool.kill_threadsafe(running.handle, _terminated()):
                terminated.append(task_id_)
    parking = state.plane.parking
    if parking is not None:  # the main thread must not block on Redis: this thread removes them
        try:
            snaps = parking.discard(ids)
        except Exception as exc:
            logger.warning("could not remove revoked tasks from ETA parking: %r", exc)
        else:
            if snaps:
                def record() -> None:
                    for snap in snaps:
                        worker.on_parked_revoked(snap)
                worker.call_soon(record)
    idstr = ", ".join(ids)
    if terminate:
        return ok(f"terminate: {', '.join(terminated or ids) if terminated else 'tasks unknown'}; "
                  f"tasks {idstr} flagged as revoked")
    return ok(f"tasks {idstr} flagged as revoked")


def _terminated() -> type[BaseException]:
    from greenq.exceptions import Terminated
    return Terminated


def _in_child(worker: "Worker", request: Any) -> bool:
    processes = worker.processes
    return processes is not None and processes.takes(request)


@control_command(args=[("task_id", str)], help="Terminate running tasks (revoke with terminate).")
def terminate(state: State, task_id: Any, signal: Any = None) -> dict[str, Any]:
    return revoke(state, task_id, terminate=True, signal=signal)


@control_command(args=[("task_name", str), ("rate_limit", str)],
                 help="Set a task's rate limit: '10/s', '100/m', a number; 0 or none for no limit.")
def rate_limit(state: State, task_name: str, rate_limit: Any) -> dict[str, Any]:
    if rate_limit in ("none", "None", "0", 0):
        rate_limit = None
    worker = state.worker
    state.apply(lambda: worker.set_rate_limit(task_name, rate_limit))
    if rate_limit is None:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


def seconds_or_none(value: str) -> float | None:
    return None if value.lower() in ("none", "") else float(value)


seconds_or_none.__name__ = "a number of seconds or 'none'"


@control_command(args=[("task_name", str), ("soft", seconds_or_none), ("hard", seconds_or_none)],
                 help="Set a task's soft and hard time limits, in seconds.")
def time_limit(state: State, task_name: str | None = None, hard: Any = None, soft: Any = None,
               **kwargs: Any) -> dict[str, Any]:
    if not task_name:
        raise ControlError("time_limit needs a task name")
    soft, hard = _seconds("soft", soft), _seconds("hard", hard)
    worker = state.worker
    state.apply(lambda: worker.set_time_limit(task_name, soft=soft, hard=hard))
    return ok("time limits set successfully")


def _seconds(label: str, value: Any) -> float | None:
    if value in (None, "none", "None", ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ControlError(f"{label} time limit must be a number of seconds, got {value!r}") from None


@control_command(help="Send task events (as -E).")
def enable_events(state: State) -> dict[str, Any]:
    worker = state.worker
    if worker.send_events:
        return ok("task events already enabled")
    worker.send_events = True
    if worker.events is not None:
        worker.events.enable()
    return ok("task events enabled")


@control_command(help="Stop sending task events.")
def disable_events(state: State) -> dict[str, Any]:
    worker = state.worker
    if not worker.send_events:
        return ok("task events already disabled")
    worker.send_events = False
    if worker.events is not None:
        worker.events.disable()
    return ok("task events disabled")


@control_command(help="Send a worker heartbeat now.")
def heartbeat(state: State) -> dict[str, Any]:
    if state.worker.events is None:
        raise ControlError("this worker sends no events")
    state.worker.events.heartbeat()
    return ok("heartbeat sent")


@control_command(args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
                 help="Start consuming from a queue (declared if it does not exist).")
def add_consumer(state: State, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                 routing_key: str | None = None, **options: Any) -> dict[str, Any]:
    if not isinstance(queue, str) or not queue:
        raise ControlError("add_consumer needs a queue name")
    worker = state.worker
    added = state.apply(lambda: worker.add_consumer(queue, exchange, exchange_type, routing_key))
    return ok(f"add consumer {queue}" if added else f"already consuming from {queue!r}")


@control_command(args=[("queue", str)], help="Stop consuming from a queue.")
def cancel_consumer(state: State, queue: str, **kwargs: Any) -> dict[str, Any]:
    worker = state.worker
    cancelled = state.apply(lambda: worker.cancel_consumer(queue))
    if not cancelled:
        raise ControlError(f"not consuming from {queue!r}")
    return ok(f"no longer consuming from {queue}")


def _count(n: Any) -> int:
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ControlError(f"n must be a whole number, got {n!r}") from None
    if n < 1:
        raise ControlError(f"n must be at least 1, got {n}")
    return n


@control_command(args=[("n", int)], help="Add N slots to the pool.")
def pool_grow(state: State, n: Any = 1, **kwargs: Any) -> dict[str, Any]:
    n = _count(n)
    worker = state.worker
    limit = state.apply(lambda: worker.resize_pool(+n))
    return ok(f"pool will grow: {limit} slots")


@control_command(args=[("n", int)], help="Remove N slots from the pool (running tasks finish).")
def pool_shrink(state: State, n: Any = 1, **kwargs: Any) -> dict[str, Any]:
    n = _count(n)
    worker = state.worker
    limit = state.apply(lambda: worker.resize_pool(-n))
    return ok(f"pool will shrink: {limit} slots")


@control_command(args=[("max", int), ("min", int)],
                 help="Set the pool size to MAX (greenq has no load-driven autoscaler: green slots cost little).")
def autoscale(state: State, max: Any = None, min: Any = None) -> dict[str, Any]:
    high = _count(max)
    low = _count(min) if min is not None else high
    if low > high:
        raise ControlError(f"min ({low}) is above max ({high})")
    worker = state.worker
    limit = state.apply(lambda: worker.resize_pool(high - worker.concurrency))
    return ok(f"autoscale now max={limit} min={low}")


@control_command(help="Warm shutdown: stop consuming, let running tasks finish.")
def shutdown(state: State, msg: str | None = None) -> dict[str, Any]:
    logger.warning("%s: shutdown requested by remote control", state.hostname)
    state.worker.call_soon(state.worker.stop)
    return ok("shutting down")


# ---------------------------------------------------------------------- the control thread
def _match(hostname: str, pattern: str, matcher: str | None) -> bool:
    if matcher == "pcre":
        return re.search(pattern, hostname) is not None
    return fnmatch.fnmatchcase(hostname, pattern)


class ControlPlane:
    """The worker's remote-control thread.  ``start()`` after the worker connected."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.app = worker.app
        self.state = State(self)
        self._stopping = False
        self._thread: Any = None
        self.connection: Any = None
        self.parking: Any = None  # this thread's own client for the ETA parking store
        self.commands_handled = 0
        pool = worker.pool
        self._sleep = pool.native_sleep if pool is not None else time.sleep

    def start(self) -> None:
        pool = self.worker.pool
        assert pool is not None
        self._thread = pool.start_native_thread(self._run, name=f"greenq-control-{self.worker.hostname}")

    def stop(self, timeout: float = 3.0) -> None:
        self._stopping = True
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # main-thread hand-over ----------------------------------------------------------
    def apply(self, fn: Callable[[], Any], timeout: float = APPLY_TIMEOUT) -> Any:
        """Run ``fn`` in the worker's main thread; return its result or raise its error."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed back to the control thread
                box["error"] = exc
            box["done"] = True

        worker = self.worker
        pool = worker.pool
        if pool is None or not pool.call_soon_threadsafe(run):
            worker.call_soon(run)
        deadline = time.monotonic() + timeout
        while "done" not in box:
            if time.monotonic() > deadline:
                raise ControlError(f"the worker's main thread did not take the change within {timeout:.0f}s "
                                   "(a task is holding it); it is applied when the main thread is free")
            self._sleep(0.002)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    # the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                self._serve()
                delay = 0.5
            except Exception as exc:
                if self._stopping:
                    break
                logger.error("%s: remote control lost its broker connection (%r); reconnecting in %.1fs",
                             self.worker.hostname, exc, delay)
                self._close()
                end = time.monotonic() + delay
                while not self._stopping and time.monotonic() < end:
                    self._sleep(0.1)
                delay = min(delay * 2, RECONNECT_MAX)
        self._close()

    def _serve(self) -> None:
        from kombu.pidbox import Mailbox

        app, worker = self.app, self.worker
        connection = app.connection()
        self.connection = connection
        connection.ensure_connection(max_retries=1)
        if self.parking is None:
            from greenq.parking import parking_for
            try:
                self.parking = parking_for(app) if worker.parking is not None else None
            except Exception as exc:
                logger.warning("remote control cannot reach the ETA parking store: %r", exc)
        mailbox = Mailbox(app.conf.control_exchange, type="fanout", accept=list(worker.accept),
                          serializer=app.conf.task_serializer, clock=worker.clock,
                          queue_ttl=QUEUE_TTL, queue_expires=QUEUE_EXPIRES)
        node = mailbox.Node(worker.hostname, state=self.state, channel=connection.channel())
        node.handle = self._handle
        node.listen(callback=lambda body, message: self._on_message(node, body, message))
        logger.debug("%s: remote control listening on %s.pidbox", worker.hostname, app.conf.control_exchange)
        while not self._stopping:
            try:
                connection.drain_events(timeout=POLL)
            except TimeoutError:
                pass
            except OSError as exc:
                if "timed out" in str(exc):
                    continue
                raise

    def _handle(self, method: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a command; a refused one (unknown, bad arguments, no such task) is
        an error reply with a message that says why."""
        try:
            return run_command(self.state, method, arguments)
        except GreenqError as exc:
            logger.warning("%s: remote-control command %s refused: %s", self.worker.hostname, method, exc)
            return {"error": str(exc)}

    def _on_message(self, node: Any, body: Any, message: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            logger.error("%s: ignored a remote-control message that is not a command: %.200r",
                         self.worker.hostname, body)
            return
        expires = (message.headers or {}).get("expires") if message is not None else None
        if expires and isinstance(expires, (int, float)) and time.time() > expires:
            return  # the caller stopped waiting long ago
        try:
            destination, pattern = body.get("destination"), body.get("pattern")
            if destination and self.worker.hostname not in destination:
                return
            if not destination and pattern and not _match(self.worker.hostname, pattern, body.get("matcher")):
                return
            if message is not None:
                self.worker.clock.adjust((message.headers or {}).get("clock") or 0)
            self.commands_handled += 1
            node.dispatch(method=body["method"], arguments=body.get("arguments"), reply_to=body.get("reply_to"),
                          ticket=body.get("ticket"))
        except Exception:
            logger.exception("%s: remote-control command %r failed", self.worker.hostname, body.get("method"))

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception as exc:
                logger.debug("closing the control connection failed: %r", exc)
        parking, self.parking = self.parking, None
        if parking is not None:
            try:
                parking.close()
            except Exception as exc:
                logger.debug("closing the control thread's parking client failed: %r", exc)


# ---------------------------------------------------------------------- the client
class Control:
    """``app.control``: send commands to workers and collect their replies.

    Replies are lists of ``{hostname: reply}``, as Celery's are.
    """

    def __init__(self, app: "App") -> None:
        self.app = app

    def mailbox(self) -> Any:
        from kombu.pidbox import Mailbox
        return Mailbox(self.app.conf.control_exchange, type="fanout", accept=list(self.app.conf.accept_content),
                       serializer=self.app.conf.task_serializer, queue_ttl=QUEUE_TTL, queue_expires=QUEUE_EXPIRES,
                       reply_queue_expires=10.0)

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None, destination: Sequence[str] | None = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None, callback: Callable | None = None,
                  pattern: str | None = None, matcher: str | None = None, connection: Any = None) -> Any:
        """Send ``command`` to every worker (or ``destination``); with ``reply``,
        wait up to ``timeout`` seconds (or for ``limit`` replies) and return them."""
        if destination is not None:
            if isinstance(destination, str):
                destination = [destination]
            destination = list(destination)
        if matcher not in (None, "glob", "pcre"):
            raise ConfigurationError(f"matcher must be 'glob' or 'pcre', got {matcher!r}")
        own = connection is None
        conn = self.app.connection() if own else connection
        try:
            box = self.mailbox()(conn)
            return box._broadcast(command, arguments or {}, destination, reply, timeout, limit, callback,
                                  pattern=pattern, matcher=matcher)
        finally:
            if own:
                conn.release()

    def inspect(self, destination: Sequence[str] | None = None, timeout: float = 1.0, limit: int | None = None,
                pattern: str | None = None, matcher: str | None = None) -> "Inspect":
        return Inspect(self, destination=destination, timeout=timeout, limit=limit, pattern=pattern, matcher=matcher)

    def _call(self, command: str, arguments: dict[str, Any], reply: bool = True, **options: Any) -> Any:
        return self.broadcast(command, arguments, reply=reply, **options)

    def ping(self, destination: Sequence[str] | None = None, timeout: float = 1.0, **options: Any) -> list[dict]:
        return self._call("ping", {}, destination=destination, timeout=timeout, **options)

    def revoke(self, task_id: str | Sequence[str], terminate: bool = False, signal: str | None = None,
               reply: bool = False, **options: Any) -> Any:
        """Revoke on every worker: a worker skips the task when it comes up and
        stores REVOKED; with ``terminate`` a running one is ended."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return self._call("revoke", {"task_id": ids, "terminate": terminate, "signal": signal},
                          reply=reply, **options)

    def terminate(self, task_id: str | Sequence[str], signal: str | None = None, **options: Any) -> Any:
        return self.revoke(task_id, terminate=True, signal=signal, **options)

    def rate_limit(self, task_name: str, rate_limit: Any, reply: bool = False, **options: Any) -> Any:
        from greenq.ratelimit import parse_rate
        parse_rate(rate_limit)
        return self._call("rate_limit", {"task_name": task_name, "rate_limit": rate_limit}, reply=reply, **options)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None, reply: bool = False,
                   **options: Any) -> Any:
        return self._call("time_limit", {"task_name": task_name, "soft": soft, "hard": hard}, reply=reply, **options)

    def enable_events(self, reply: bool = False, **options: Any) -> Any:
        return self._call("enable_events", {}, reply=reply, **options)

    def disable_events(self, reply: bool = False, **options: Any) -> Any:
        return self._call("disable_events", {}, reply=reply, **options)

    def heartbeat(self, reply: bool = False, **options: Any) -> Any:
        return self._call("heartbeat", {}, reply=reply, **options)

    def add_consumer(self, queue: str, exchange: str | None = None, exchange_type: str | None = None,
                     routing_key: str | None = None, reply: bool = False, **options: Any) -> Any:
        return self._call("add_consumer", {"queue": queue, "exchange": exchange, "exchange_type": exchange_type,
                                           "routing_key": routing_key}, reply=reply, **options)

    def cancel_consumer(self, queue: str, reply: bool = False, **options: Any) -> Any:
        return self._call("cancel_consumer", {"queue": queue}, reply=reply, **options)

    def pool_grow(self, n: int = 1, reply: bool = False, **options: Any) -> Any:
        return self._call("pool_grow", {"n": n}, reply=reply, **options)

    def pool_shrink(self, n: int = 1, reply: bool = False, **options: Any) -> Any:
        return self._call("pool_shrink", {"n": n}, reply=reply, **options)

    def autoscale(self, max: int, min: int | None = None, reply: bool = False, **options: Any) -> Any:
        return self._call("autoscale", {"max": max, "min": min}, reply=reply, **options)

    def shutdown(self, reply: bool = False, **options: Any) -> Any:
        return self._call("shutdown", {}, reply=reply, **options)


class Inspect:
    """``app.control.inspect()``: read-only commands; each returns
    ``{hostname: reply}`` merged from every worker that answered, or None."""

    def __init__(self, control: Control, **options: Any) -> None:
        self.control = control
        self.options = options

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        replies = self.control.broadcast(command, arguments, reply=True, **self.options) or []
        merged: dict[str, Any] = {}
        for reply in replies:
            if isinstance(reply, dict):
                merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._request("ping")

    def stats(self) -> dict[str, Any] | None:
        return self._request("stats")

    def active(self, safe: Any = None) -> dict[str, Any] | None:
        return self._request("active", safe=safe)

    def reserved(self) -> dict[str, Any] | None:
        return self._request("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._request("scheduled")

    def revoked(self) -> dict[str, Any] | None:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    def active_queues(self) -> dict[str, Any] | None:
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        flat: list[str] = []
        for item in ids:
            flat.extend([item] if isinstance(item, str) else item)
        return self._request("query_task", ids=flat)

    def clock(self) -> dict[str, Any] | None:
        return self._request("clock")

    def report(self) -> dict[str, Any] | None:
        return self._request("report")

    def hello(self, from_node: str, revoked: Any = None) -> dict[str, Any] | None:
        return self._request("hello", from_node=from_node, revoked=revoked)


def command_names(kind: str | None = None) -> list[str]:
    return sorted(name for name, command in COMMANDS.items() if kind is None or command.type == kind)


def parse_cli_arguments(name: str, values: Iterable[str]) -> dict[str, Any]:
    """Positional CLI words -> the command's arguments, as ``celery control`` takes them.

    Raises:
        ControlError: unknown command, too many or badly typed arguments.
    """
    command = COMMANDS.get(name)
    if command is None:
        raise ControlError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    values = list(values)
    if name in ("revoke", "terminate", "query_task"):
        key = "ids" if name == "query_task" else "task_id"
        if not values:
            raise ControlError(f"{name} needs at least one task id")
        extra = {}
        if name == "terminate" and len(values) > 1 and not _looks_like_id(values[-1]):
            extra["signal"] = values.pop()
        return {key: values, **extra}
    if len(values) > len(command.args):
        raise ControlError(f"{name} takes at most {len(command.args)} argument(s) "
                           f"({' '.join(a for a, _ in command.args) or 'none'}), got {len(values)}")
    arguments: dict[str, Any] = {}
    for (arg, type_), value in zip(command.args, values):
        try:
            arguments[arg] = type_(value) if type_ is not str else value
        except ValueError:
            raise ControlError(f"{name}: {arg} must be {type_.__name__}, got {value!r}") from None
    return arguments


def _looks_like_id(value: str) -> bool:
    return len(value) > 8 and not value.upper().startswith("SIG")


__all__ = ["COMMANDS", "Control", "ControlError", "ControlPlane", "Inspect", "NotRegistered", "command_names",
           "control_command", "inspect_command", "parse_cli_arguments"]
