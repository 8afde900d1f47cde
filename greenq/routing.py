"""Queues and routing: where a task message goes.

Precedence, highest first (documented in docs/routing.md and tested):

1. options given to ``apply_async``/``send_task`` (``queue=``, ``routing_key=``,
   ``exchange=``, ``priority=``);
2. ``task_routes``: a dict of task name or glob pattern to options, a
   router function ``(name, args, kwargs, options, task=None) -> dict|str|None``,
   or a list of these, tried in order until one answers;
3. the task's own attributes (``@app.task(queue="feeds")``);
4. ``task_default_queue`` (``celery``).

A queue name that is neither the default nor in ``task_queues`` is created on
first use (a direct exchange of the same name) unless
``task_create_missing_queues`` is off, in which case it is an error.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Iterable, Mapping

from kombu import Exchange, Queue

from greenq.config import load_object
from greenq.exceptions import ConfigurationError

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
    return Queue(name, exchange, routing_key=spec.get("routing_key", name),
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
                raise ConfigurationError(
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


def _compile_map(routes: Mapping[str, Any]) -> RouterFn:
    exact = {k: v for k, v in routes.items() if not any(c in k for c in "*?[")}
    patterns = [(re.compile(fnmatch.translate(k)), v) for k, v in routes.items() if k not in exact]

    def route(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in exact:
            return exact[name]
        for pattern, value in patterns:
            if pattern.match(name):
                return value
        return None
    return route


def compile_routes(routes: Any) -> list[RouterFn]:
    if routes is None:
        return []
    if isinstance(routes, (Mapping, str)) or callable(routes):
        routes = [routes]
    compiled = []
    for entry in routes:
        if isinstance(entry, str):
            entry = load_object(entry)
        if isinstance(entry, Mapping):
            compiled.append(_compile_map(entry))
        elif callable(entry):
            compiled.append(entry)
        else:
            raise ConfigurationError(f"task_routes entries must be dicts or router functions, got {entry!r}")
    return compiled


class Router:
    """Decides queue, exchange, routing key and priority for a task message."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queues = Queues(app.conf)
        self.routes = compile_routes(app.conf.task_routes)

    def lookup(self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], task: Any) -> dict[str, Any]:
        for router in self.routes:
            try:
                answer = router(name, args, kwargs, options, task=task)
            except TypeError:
                answer = router(name, args, kwargs, options)
            if answer is None:
                continue
            if isinstance(answer, str):
                return {"queue": answer}
            if not isinstance(answer, Mapping):
                raise ConfigurationError(f"router {router!r} returned {answer!r}: expected a dict, a queue name or None")
            return dict(answer)
        return {}

    def route(self, name: str, args: Any = (), kwargs: Any = None, options: Mapping[str, Any] | None = None,
              task: Any = None) -> dict[str, Any]:
        """Returns ``{"queue": Queue, "exchange": str, "routing_key": str, "priority": int|None}``."""
        explicit = {k: v for k, v in (options or {}).items() if v is not None}
        merged: dict[str, Any] = {}
        if task is not None:
            merged.update({k: v for k, v in (("queue", task.queue), ("routing_key", task.routing_key),
                                              ("exchange", task.exchange), ("priority", task.priority))
                           if v is not None})
        merged.update(self.lookup(name, args, kwargs, explicit, task))
        merged.update(explicit)
        queue = merged.get("queue") or self.app.conf.task_default_queue
        queue = queue if isinstance(queue, Queue) else self.queues.get_or_create(queue)
        exchange = merged.get("exchange")
        if isinstance(exchange, Exchange):
            exchange = exchange.name
        routing_key = merged.get("routing_key")
        if exchange is None:
            if queue.exchange is None or queue.exchange.type == "direct":
                # the anonymous exchange delivers straight to the queue (Celery does the same)
                exchange, routing_key = "", routing_key or queue.name
                if routing_key != queue.name:
                    exchange = queue.exchange.name if queue.exchange is not None else ""
            else:
                exchange = queue.exchange.name
                routing_key = routing_key or queue.routing_key
        priority = merged.get("priority", self.app.conf.task_default_priority)
        return {"queue": queue, "exchange": exchange, "routing_key": routing_key or "", "priority": priority}
