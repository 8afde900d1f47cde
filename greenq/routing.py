"""Queues and routing: where a task message goes.

Precedence, highest first (documented in docs/routing.md and tested):

1. options given to ``apply_async``/``send_task`` (``queue=``, ``routing_key=``,
   ``exchange=``, ``priority=``);
2. ``task_routes``: a dict of task name or glob pattern to options, a
   router function ``(name, args, kwargs, options, task=None) -> dict|str|None``,
   or a list of these, tried in order until one answers;
3. the task's own attributes (``@app.task(queue="feeds")``);
4. ``task_default_queue`` (``celery``).

Each level gives a *destination*: a queue, or an exchange plus a routing
key.  A level that names a queue or an exchange replaces the whole
destination of the levels below it (``apply_async(queue="other")`` does not
inherit the routing key a route set for another queue); a level that gives
only a ``routing_key`` or a ``priority`` changes just that.  A queue expands
to its declaration in ``task_queues``: a direct queue is published through
the default exchange straight to the queue, a topic or fanout queue through
its exchange with the routing key given, else its binding key.  This differs
from Celery 5, where task attributes rank with explicit options above the
routers; here ``task_routes`` (deployment configuration) can re-route a task
without touching its code, as in the seeds.

A queue name that is neither the default nor in ``task_queues`` is created on
first use (a direct exchange of the same name) unless
``task_create_missing_queues`` is off, in which case it is an error
(:class:`~greenq.exceptions.QueueNotFound`).
"""
from __future__ import annotations

import fnmatch
import inspect
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from kombu import Exchange, Queue

from greenq.config import load_object
from greenq.exceptions import ConfigurationError, QueueNotFound

EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


def make_queue(spec: Any, conf: Any) -> Queue:
    """A kombu Queue from a Queue, a name, or a dict
    ``{"name", "exchange", "exchange_type", "routing_key", "queue_arguments", "durable", "max_priority"}``."""
    if isinstance(spec, Queue):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise ConfigurationError(f"task_queues entries must be kombu Queues, names or dicts with 'name'; got {spec!r}")
    unknown = set(spec) - {"name", "exchange", "exchange_type", "routing_key", "queue_arguments",
                           "durable", "max_priority", "auto_delete", "bindings"}
    if unknown:
        raise ConfigurationError(f"queue {spec['name']!r}: unknown keys {sorted(unknown)}")
    name = spec["name"]
    exchange_type = spec.get("exchange_type", "direct")
    if exchange_type not in EXCHANGE_TYPES:
        raise ConfigurationError(f"queue {name!r}: exchange_type must be one of {EXCHANGE_TYPES}, got {exchange_type!r}")
    exchange = spec.get("exchange", name)
    if isinstance(exchange, str):
        exchange = Exchange(exchange, type=exchange_type)
    arguments = dict(spec.get("queue_arguments") or {})
    max_priority = spec.get("max_priority", conf.task_queue_max_priority)
    if max_priority is not None:
        arguments["x-max-priority"] = max_priority
    # a fanout exchange ignores keys, but kombu's Redis transport puts the binding
    # key into the PUB/SUB channel name: bind with "" so every queue hears it
    default_key = "" if exchange.type == "fanout" else name
    return Queue(name, exchange, routing_key=spec.get("routing_key", default_key),
                 durable=spec.get("durable", True), auto_delete=spec.get("auto_delete", False),
                 queue_arguments=arguments or None)


class Queues(dict):
    """The app's queues by name, created on demand when allowed."""

    def __init__(self, conf: Any) -> None:
        super().__init__()
        self.conf = conf
        configured = conf.task_queues
        if isinstance(configured, Mapping):
            configured = [{"name": name, **(opts or {})} for name, opts in configured.items()]
        for spec in configured or ():
            queue = make_queue(spec, conf)
            self[queue.name] = queue
        default = conf.task_default_queue
        if default not in self:
            exchange = conf.task_default_exchange or default
            self[default] = make_queue({"name": default, "exchange": exchange,
                                        "exchange_type": conf.task_default_exchange_type,
                                        "routing_key": conf.task_default_routing_key or default}, conf)

    def get_or_create(self, name: str) -> Queue:
        queue = self.get(name)
        if queue is None:
            if not self.conf.task_create_missing_queues:
                raise QueueNotFound(
                    f"queue {name!r} is not in task_queues and task_create_missing_queues is off: "
                    f"declare it in task_queues (known: {', '.join(sorted(self))})")
            queue = self[name] = make_queue(name, self.conf)
        return queue

    def select(self, include: Iterable[str] | None, exclude: Iterable[str] | None = None) -> list[Queue]:
        """The queues a worker consumes: ``-Q`` (default: all known) minus ``-X``."""
        names = list(include) if include else list(self)
        excluded = set(exclude or ())
        unknown = excluded - set(self) - set(names)
        if unknown:
            raise ConfigurationError(f"-X names queues that are not consumed: {', '.join(sorted(unknown))}")
        chosen = [self.get_or_create(n) for n in names if n not in excluded]
        if not chosen:
            raise ConfigurationError("no queues left to consume after -Q/-X")
        return chosen


RouterFn = Callable[..., Any]

#: the keys that together name a destination; a level of precedence that names
#: a queue or an exchange replaces all of them from the levels below it
DESTINATION_KEYS = ("queue", "exchange", "exchange_type", "routing_key")


def _is_pattern(key: Any) -> bool:
    return isinstance(key, re.Pattern) or (isinstance(key, str) and any(c in key for c in "*?["))


def _compile_map(routes: Mapping[Any, Any] | Sequence[tuple[Any, Any]]) -> RouterFn:
    """A router from ``{name or glob or re.Pattern: route}`` or ``[(glob, route), ...]``.

    An exact name wins over patterns; patterns are tried in order.
    """
    items = list(routes.items()) if isinstance(routes, Mapping) else list(routes)
    exact = {k: v for k, v in items if not _is_pattern(k)}
    patterns = [(k if isinstance(k, re.Pattern) else re.compile(fnmatch.translate(k)), v)
                for k, v in items if _is_pattern(k)]

    def route(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in exact:
            return exact[name]
        for pattern, value in patterns:
            if pattern.match(name):
                return value
        return None
    return route


def _takes_task(fn: Callable[..., Any]) -> bool:
    """Whether a router function accepts the ``task=`` keyword (newer signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return "task" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _pairs(entry: Any) -> bool:
    return isinstance(entry, (list, tuple)) and bool(entry) and all(
        isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], (str, re.Pattern))
        for item in entry)


def compile_routes(routes: Any) -> list[RouterFn]:
    """Routers from ``task_routes``: a dict, a router function or object, a
    ``"module:attr"`` path, a list of ``(glob, route)`` pairs, or a list of these."""
    if routes is None:
        return []
    if isinstance(routes, (Mapping, str)) or callable(routes) or hasattr(routes, "route_for_task") \
            or _pairs(routes):
        routes = [routes]
    compiled: list[RouterFn] = []
    for entry in routes:
        if isinstance(entry, str):
            entry = load_object(entry)
        if hasattr(entry, "route_for_task"):   # a router object, as in Celery
            entry = entry.route_for_task
        if isinstance(entry, Mapping) or _pairs(entry):
            compiled.append(_compile_map(entry))
        elif callable(entry):
            if _takes_task(entry):
                compiled.append(entry)
            else:
                compiled.append(lambda name, args, kwargs, options, task=None, _fn=entry:
                                _fn(name, args, kwargs, options))
        else:
            raise ConfigurationError(f"task_routes entries must be dicts or router functions, got {entry!r}")
    return compiled


class Router:
    """Decides queue, exchange, routing key and priority for a task message.

    See the module docstring (and docs/routing.md) for the precedence.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queues = Queues(app.conf)
        self.routes = compile_routes(app.conf.task_routes)

    def lookup(self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], task: Any) -> dict[str, Any]:
        """The first answer of ``task_routes`` (a dict), or {}."""
        for router in self.routes:
            answer = router(name, args, kwargs, options, task=task)
            if answer is None:
                continue
            if isinstance(answer, (str, Queue)):
                return {"queue": answer}
            if not isinstance(answer, Mapping):
                raise ConfigurationError(f"router {router!r} returned {answer!r}: expected a dict, a queue name or None")
            return dict(answer)
        return {}

    @staticmethod
    def task_options(task: Any) -> dict[str, Any]:
        if task is None:
            return {}
        return {k: v for k, v in (("queue", task.queue), ("routing_key", task.routing_key),
                                  ("exchange", task.exchange), ("priority", task.priority)) if v is not None}

    def route(self, name: str, args: Any = (), kwargs: Any = None, options: Mapping[str, Any] | None = None,
              task: Any = None) -> dict[str, Any]:
        """Where to publish task ``name``.

        Returns ``{"queue": Queue or None, "exchange": str, "routing_key": str,
        "priority": int or None, "declare": [entities to declare first]}``.

        Raises:
            QueueNotFound: a queue that is not declared, with
                ``task_create_missing_queues`` off.
        """
        explicit = {k: v for k, v in (options or {}).items() if v is not None}
        merged: dict[str, Any] = {}
        for level in (self.task_options(task), self.lookup(name, args, kwargs, explicit, task), explicit):
            if "queue" in level or "exchange" in level:
                for key in DESTINATION_KEYS:   # a new destination: nothing of the old one leaks into it
                    merged.pop(key, None)
            merged.update({k: v for k, v in level.items() if v is not None})
        return self.expand(merged)

    def expand(self, merged: Mapping[str, Any]) -> dict[str, Any]:
        """Fill in a destination from the queue declarations."""
        exchange = merged.get("exchange")
        exchange_type = merged.get("exchange_type")
        if isinstance(exchange, Exchange):
            exchange_type = exchange_type or exchange.type
            exchange = exchange.name
        routing_key = merged.get("routing_key")
        queue = merged.get("queue")
        declare: list[Any] = []
        if queue is None and exchange is not None:
            # an exchange without a queue: declare the queues bound to it, so the
            # exchange exists with its declared type before the publish
            bound = [q for q in self.queues.values() if q.exchange is not None and q.exchange.name == exchange]
            declare = bound or ([Exchange(exchange, type=exchange_type)] if exchange_type else [])
            queue = bound[0] if bound else None
            if routing_key is None and queue is not None and queue.exchange.type != "fanout":
                routing_key = queue.routing_key
        else:
            queue = queue if isinstance(queue, Queue) else self.queues.get_or_create(
                queue or self.app.conf.task_default_queue)
            declare = [queue]
            if exchange is None:
                if queue.exchange is None or queue.exchange.type == "direct":
                    # the anonymous exchange delivers straight to the queue (Celery does the same)
                    exchange, routing_key = "", routing_key or queue.name
                    if routing_key != queue.name:
                        exchange = queue.exchange.name if queue.exchange is not None else ""
                else:
                    exchange = queue.exchange.name
                    routing_key = routing_key or queue.routing_key
            elif routing_key is None and not (queue.exchange is not None and queue.exchange.type == "fanout"):
                routing_key = queue.routing_key
        priority = merged.get("priority", self.app.conf.task_default_priority)
        return {"queue": queue, "exchange": exchange, "routing_key": routing_key or "", "priority": priority,
                "declare": declare}
