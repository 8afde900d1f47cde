"""The application: configuration, the task registry, connections and results.

Importing this module does not import kombu, sockets or ssl: connections,
routers and backends are built on first use, so a process can still be
monkey-patched for gevent after ``App(...)`` and ``@app.task`` have run.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from greenq import signals
from greenq.config import Settings, load_object, settings_from_object
from greenq.exceptions import ConfigurationError, MessageTooLarge, NotRegistered, PoolError

if TYPE_CHECKING:
    from kombu import Connection

    import greenq.result
    from greenq.backends.base import Backend
    from greenq.task import Task

logger = logging.getLogger(__name__)

_apps: list["App"] = []


def current_app() -> "App":
    """The most recently created app (or a default one)."""
    if not _apps:
        App("default")
    return _apps[-1]


class TaskRegistry(dict):
    """Tasks by name."""

    def __missing__(self, name: str) -> "Task":
        raise NotRegistered(f"task {name!r} is not registered")

    def register(self, task: "Task") -> "Task":
        self[task.name] = task
        return task

    def regular(self) -> list[str]:
        """Names of user tasks (greenq's own ``celery.*`` helpers left out)."""
        return sorted(n for n in self if not n.startswith("celery."))


class App:
    """A greenq application.

    Args:
        main: the name of the main module, used to name tasks defined in
            ``__main__``.
        broker: broker URL (``redis://``, ``amqp://``, ``embedded://``); unset
            means ``$GREENQ_BROKER_URL``, then the embedded broker.
        backend: result backend URL; unset means ``$GREENQ_RESULT_BACKEND``,
            then the embedded store when the broker is embedded, else none.
        include: modules the worker imports at start (where tasks live).
        config_source: an object, module or ``"module:attr"`` to read settings from.
        **settings: any setting from :mod:`greenq.config`, validated.
    """

    def __init__(self, main: str | None = None, *, broker: str | None = None, backend: str | None = None,
                 include: Sequence[str] = (), config_source: Any = None, namespace: str | None = None,
                 **settings: Any) -> None:
        self.main = main
        self.conf = Settings()
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if broker is not None:
            settings["broker_url"] = broker
        if backend is not None:
            settings["result_backend"] = backend
        if include:
            settings["include"] = tuple(include)
        self.conf.update(settings)
        self.tasks = TaskRegistry()
        self._concurrency_hint: int | None = None
        # queues and exchanges this process declared (kombu copies them on every declare)
        self._declared: set[tuple[str, str]] = set()
        self._finalize_callbacks: list[Callable[[], None]] = []
        _apps.append(self)

    def __repr__(self) -> str:
        return f"<greenq.App {self.main or '__main__'} broker={self.broker_url_for_display()}>"

    # configuration ------------------------------------------------------------
    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Read settings from a module, class, mapping or ``"module:attr"`` path.

        With ``namespace="GREENQ"`` only ``GREENQ_``-prefixed names are read
        (``GREENQ_BROKER_URL`` -> ``broker_url``).  Unknown names are errors.
        """
        self.conf.update(settings_from_object(obj, namespace))
        self.__dict__.pop("router", None)
        self.__dict__.pop("backend", None)

    def broker_url(self) -> str:
        return self.conf.broker_url or "embedded://"

    def broker_url_for_display(self) -> str:
        from greenq.config import mask_url
        return mask_url(self.broker_url())

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url().startswith("embedded://")

    def connection_pool_size(self) -> int:
        """Connections each pool (producers, results) gets in this process."""
        if self.conf.broker_pool_limit:
            return self.conf.broker_pool_limit
        hint = self._concurrency_hint or 1
        return max(10, min(hint + 2, 200))

    def now(self) -> datetime:
        from greenq.protocol import utcnow
        return utcnow()

    # tasks ----------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """Declare a task: ``@app.task`` or ``@app.task(name=..., bind=True, ...)``.

        Options are validated here: an unknown or ill-typed option raises
        :class:`~greenq.exceptions.ConfigurationError` at import time.
        """
        from greenq.task import create_task

        if args and callable(args[0]) and len(args) == 1 and not options:
            return create_task(self, args[0], {})
        if args:
            raise TypeError("use @app.task or @app.task(option=...); positional arguments are not options")

        def decorator(fn: Callable[..., Any]) -> "Task":
            return create_task(self, fn, options)
        return decorator

    def register_task(self, task: "Task") -> "Task":
        return self.tasks.register(task)

    def gen_task_name(self, fn: Callable[..., Any]) -> str:
        module = fn.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fn.__qualname__}"

    def import_default_modules(self) -> None:
        for module in (*self.conf.imports, *self.conf.include):
            load_object(module)

    # connections ------------------------------------------------------------------
    def connection(self, url: str | None = None, **kwargs: Any) -> "Connection":
        """A new kombu Connection to the broker (not connected yet)."""
        from kombu import Connection

        url = url or self.broker_url()
        options = dict(self.conf.broker_transport_options)
        if url.startswith("embedded://"):
            from greenq import embedded
            if url.rstrip("/") == "embedded:":
                url = "embedded://localhost/"  # kombu warns about a URL without a host
            options = {**embedded.transport_options(embedded.data_dir(self),
                                                    self.conf.embedded_polling_interval), **options}
        heartbeat = self.conf.broker_heartbeat if url.startswith(("amqp", "pyamqp")) else 0
        if url.startswith("redis://"):  # rediss:// stays on stock kombu
            import greenq.transport.redis  # noqa: F401  registers the greenq-redis alias
            url = "greenq-" + url
        return Connection(url, transport_options=options, heartbeat=heartbeat or 0,
                          connect_timeout=self.conf.broker_connection_timeout, **kwargs)

    connection_for_read = connection
    connection_for_write = connection

    @cached_property
    def producer_pool(self) -> Any:
        from kombu.pools import ProducerPool

        size = self.connection_pool_size()
        connections = self.connection().Pool(limit=size)
        return ProducerPool(connections, limit=size)

    @cached_property
    def control(self) -> Any:
        """Remote control of the workers: ``app.control.ping()``, ``app.control.inspect().active()``."""
        from greenq.control import Control
        return Control(self)

    @cached_property
    def router(self) -> Any:
        from greenq.routing import Router
        return Router(self)

    @property
    def queues(self) -> Any:
        return self.router.queues

    # results ------------------------------------------------------------------------
    @cached_property
    def backend(self) -> "Backend":
        from greenq.backends import backend_from_url

        url = self.conf.result_backend
        if not url:
            url = "embedded://" if self.uses_embedded_broker else "disabled://"
        return backend_from_url(self, url)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> "greenq.result.AsyncResult":  # noqa: N802 - Celery's name
        from greenq.result import AsyncResult
        return AsyncResult(task_id, app=self, **kwargs)

    def GroupResult(self, group_id: str,  # noqa: N802 - Celery's name
                    results: Iterable["greenq.result.AsyncResult"]) -> "greenq.result.GroupResult":
        from greenq.result import GroupResult
        return GroupResult(group_id, list(results), app=self)

    # sending --------------------------------------------------------------------------
    def send_task(self, name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                  *, task: "Task | None" = None, **options: Any) -> "greenq.result.AsyncResult":
        """Send a task by name (it need not be registered in this process).

        Accepts the options of :meth:`Task.apply_async`.
        """
        from greenq import protocol
        from greenq.result import AsyncResult

        options = dict(options)
        task_id = options.pop("task_id", None) or str(uuid.uuid4())
        now = self.now()
        countdown = options.pop("countdown", None)
        eta = options.pop("eta", None)
        if countdown is not None:
            if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
                raise TypeError(f"countdown must be a number of seconds, got {countdown!r}")
            if eta is not None:
                raise ConfigurationError("give countdown or eta, not both")
            eta = protocol.absolute_time(countdown, field="countdown", now=now)
        else:
            eta = protocol.absolute_time(eta, field="eta", now=now)
        expires = protocol.absolute_time(options.pop("expires", None), field="expires", now=now)
        serializer = options.pop("serializer", None) or (task.serializer if task else None) \
            or self.conf.task_serializer
        compression = options.pop("compression", None) or self.conf.task_compression
        headers_extra = options.pop("headers", None) or {}
        route = self.router.route(name, args, kwargs, {
            "queue": options.pop("queue", None), "routing_key": options.pop("routing_key", None),
            "exchange": options.pop("exchange", None), "priority": options.pop("priority", None)}, task=task)
        link = options.pop("link", None)
        link_error = options.pop("link_error", None)
        headers, properties, body = protocol.task_message(
            name, task_id, args, kwargs,
            eta=eta, expires=expires,
            retries=options.pop("retries", 0),
            time_limit=options.pop("time_limit", None),
            soft_time_limit=options.pop("soft_time_limit", None),
            root_id=options.pop("root_id", None),
            parent_id=options.pop("parent_id", None),
            group_id=options.pop("group_id", None),
            group_index=options.pop("group_index", None),
            ignore_result=bool(options.pop("ignore_result", False)),
            shadow=options.pop("shadow", None),
            callbacks=_signature_list(link),
            errbacks=_signature_list(link_error),
            chain=options.pop("chain", None),
            chord=options.pop("chord", None),
            reply_to=options.pop("reply_to", None),
            origin=options.pop("origin", None),
            extra_headers=headers_extra,
        )
        unknown = set(options) - {"retry", "retry_policy"}
        if unknown:
            raise TypeError(f"send_task got unknown options: {', '.join(sorted(unknown))}")
        self.publish_task(body, headers, properties, route, serializer=serializer, compression=compression,
                          retry=options.get("retry"), retry_policy=options.get("retry_policy"))
        return AsyncResult(task_id, app=self, name=name)

    def publish_task(self, body: Any, headers: dict[str, Any], properties: dict[str, Any], route: dict[str, Any],
                     *, serializer: str, compression: str | None = None,
                     retry: bool | None = None, retry_policy: Mapping[str, Any] | None = None) -> None:
        """Publish an already-built task message to its route."""
        from kombu.exceptions import LimitExceeded
        from kombu.serialization import dumps

        content_type, content_encoding, payload = dumps(body, serializer=serializer)
        max_size = self.conf.task_message_max_size
        if max_size and len(payload) > max_size:
            raise MessageTooLarge(
                f"task {headers['task']}[{headers['id']}]: message is {len(payload)} bytes, over "
                f"task_message_max_size ({max_size}); pass large data by reference (a URL or a key)")
        queue = route["queue"]
        exchange = route["exchange"]
        routing_key = route["routing_key"]
        declare = route.get("declare", [queue] if queue is not None else [])
        signals.before_task_publish.send(sender=headers["task"], body=body, exchange=exchange,
                                         routing_key=routing_key, headers=headers, properties=properties,
                                         declare=declare, retry_policy=retry_policy)
        retry = self.conf.task_publish_retry if retry is None else retry
        policy = {**self.conf.task_publish_retry_policy, **(retry_policy or {})}
        fresh = [entity for entity in declare if _entity_key(entity) not in self._declared]
        try:
            producer_cm = self.producer_pool.acquire(block=True, timeout=self.conf.broker_pool_acquire_timeout)
        except LimitExceeded as exc:
            raise PoolError(
                f"no broker connection free within {self.conf.broker_pool_acquire_timeout}s: "
                "raise broker_pool_limit") from exc
        with producer_cm as producer:
            producer.publish(
                payload, exchange=exchange, routing_key=routing_key,
                content_type=content_type, content_encoding=content_encoding,
                headers=headers, priority=route.get("priority"),
                compression=compression, declare=fresh,
                retry=retry, retry_policy=policy, **properties)
        self._declared.update(_entity_key(entity) for entity in fresh)
        signals.after_task_publish.send(sender=headers["task"], body=body, exchange=exchange,
                                        routing_key=routing_key, headers=headers)

    # running a worker ---------------------------------------------------------------------
    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        """Run a worker in this process: ``app.worker_main(["worker", "-P", "gevent"])``.

        The process is patched for the chosen pool before anything else,
        exactly as the ``greenq`` command does.
        """
        from greenq.cli import run_cli
        argv = list(argv or ["worker"])
        if argv[:1] != ["worker"]:
            argv.insert(0, "worker")
        run_cli(argv, app=self)

    def close(self) -> None:
        """Release pooled connections."""
        self._declared.clear()
        pool = self.__dict__.pop("producer_pool", None)
        if pool is not None:
            pool.connections.force_close_all()
            pool.force_close_all()
        backend = self.__dict__.pop("backend", None)
        if backend is not None:
            backend.close()


def _entity_key(entity: Any) -> tuple[str, str]:
    """What publish_task remembers as declared: ("Queue", name) or ("Exchange", name)."""
    return type(entity).__name__, entity.name


def _signature_list(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [dict(value)]
    return [dict(v) for v in value]
