"""Tasks: ``@app.task``, calling (``delay``, ``apply_async``, ``apply``) and ``retry``.

Options are checked when the task is declared, so a typo such as
``max_retrys=3`` or ``time_limit="10"`` fails at import with a message that
names the option, not in production at 3 a.m.
"""
from __future__ import annotations

import contextvars
import inspect
import random
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from greenq.config import suggest
from greenq.exceptions import ConfigurationError, MaxRetriesExceededError, Retry
from greenq.protocol import Request
from greenq.ratelimit import RATE_LIMIT_SCOPES, parse_rate

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.canvas import Signature
    from greenq.result import AsyncResult, EagerResult

# The running task's request, per green thread / thread (greenlet >= 1.0
# gives every greenlet its own context, so this is safe under gevent and
# eventlet whether or not the process was patched before it was created).
_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar("greenq_request", default=None)

_DIRECT = Request(called_directly=True)


def _number(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ConfigurationError(f"task option {name} must be a number of seconds greater than 0, got {value!r}")


def _exception_classes(name: str, value: Any) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(f"task option {name} must be exception classes, got {item!r}")
    return tuple(items)


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    checked = dict(options)
    for key in ("time_limit", "soft_time_limit", "default_retry_delay", "retry_backoff_max"):
        if key == "default_retry_delay" and options.get(key) == 0:
            continue
        _number(key, options.get(key))
    hard, soft = options.get("time_limit"), options.get("soft_time_limit")
    if hard and soft and soft >= hard:
        raise ConfigurationError(
            f"task option soft_time_limit ({soft}) must be less than time_limit ({hard}): "
            "the soft limit is the warning, the hard limit the end")
    if "max_retries" in options:
        value = options["max_retries"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigurationError(f"task option max_retries must be an integer >= 0 or None, got {value!r}")
    if "rate_limit" in options:
        parse_rate(options["rate_limit"])
    key_fn = options.get("rate_limit_key")
    if key_fn is not None:
        if not callable(key_fn):
            raise ConfigurationError(
                f"task option rate_limit_key must be a function of the task's arguments returning the "
                f"bucket key (for example the domain of a URL), got {key_fn!r}")
        checked["rate_limit_key"] = staticmethod(key_fn)
    scope = options.get("rate_limit_scope")
    if scope is not None and scope not in RATE_LIMIT_SCOPES:
        raise ConfigurationError(
            f"task option rate_limit_scope must be 'worker' (each worker has its own buckets) or 'global' "
            f"(one bucket shared by every worker, kept in Redis), got {scope!r}")
    for key in ("autoretry_for", "dont_autoretry_for"):
        if key in options:
            checked[key] = _exception_classes(key, options[key])
    backoff = options.get("retry_backoff")
    if backoff is not None and (not isinstance(backoff, (bool, int, float)) or backoff < 0):
        raise ConfigurationError(f"task option retry_backoff must be True/False or a number of seconds, got {backoff!r}")
    for key in ("queue", "routing_key", "exchange", "serializer", "name"):
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"task option {key} must be a string, got {value!r}")
    priority = options.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255):
        raise ConfigurationError(f"task option priority must be an integer 0-255, got {priority!r}")
    expires = options.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float, datetime))):
        raise ConfigurationError(f"task option expires must be seconds or a datetime, got {expires!r}")
    if "retry_kwargs" in options and not isinstance(options["retry_kwargs"], Mapping):
        raise ConfigurationError(f"task option retry_kwargs must be a dict, got {options['retry_kwargs']!r}")
    for key in ("bind", "ignore_result", "acks_late", "track_started", "typing", "retry_jitter",
                "reject_on_worker_lost", "store_errors_even_if_ignored", "cpu"):
        if key in options and not isinstance(options[key], bool):
            raise ConfigurationError(f"task option {key} must be True or False, got {options[key]!r}")
    return checked


#: option -> the setting it defaults to (None: the Task class attribute)
TASK_OPTIONS: dict[str, str | None] = {
    "name": None, "bind": None, "base": None, "typing": None, "shadow_name": None,
    "max_retries": "task_max_retries",
    "default_retry_delay": "task_default_retry_delay",
    "autoretry_for": None, "dont_autoretry_for": None, "retry_kwargs": None,
    "retry_backoff": None, "retry_backoff_max": None, "retry_jitter": None,
    "rate_limit": "task_default_rate_limit",
    "rate_limit_key": None,    # calls -> bucket key: per-key rate limits (greenq/ratelimit.py)
    "rate_limit_scope": None,  # "worker" or "global" (Redis-backed, shared by every worker)
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "ignore_result": "task_ignore_result",
    "store_errors_even_if_ignored": "task_store_errors_even_if_ignored",
    "acks_late": "task_acks_late",
    "reject_on_worker_lost": "task_reject_on_worker_lost",
    "track_started": "task_track_started",
    "serializer": "task_serializer",
    "queue": None, "routing_key": None, "exchange": None, "priority": None, "expires": None,
    "cpu": None,  # CPU-bound: runs in the worker's CPU pool (--cpu-pool), see greenq/offload.py
}


class _FromConfig:
    """A task attribute that falls back to an app setting until set."""

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, task: "Task | None", owner: type) -> Any:
        if task is None:
            return self
        value = task._options.get(self.name)
        return task.app.conf[self.setting] if value is None else value

    def __set__(self, task: "Task", value: Any) -> None:
        _check_options({self.name: value})
        task._options[self.name] = value


class Task:
    """A task type.  Subclass it and pass ``base=`` for shared behaviour."""

    app: "App"
    name: str
    typing = True
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max = 600.0
    retry_jitter = True
    queue: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    priority: int | None = None
    expires: float | datetime | None = None
    cpu = False
    rate_limit_key: Callable[..., Any] | None = None
    rate_limit_scope = "worker"

    max_retries = _FromConfig("task_max_retries")
    default_retry_delay = _FromConfig("task_default_retry_delay")
    rate_limit = _FromConfig("task_default_rate_limit")
    time_limit = _FromConfig("task_time_limit")
    soft_time_limit = _FromConfig("task_soft_time_limit")
    ignore_result = _FromConfig("task_ignore_result")
    store_errors_even_if_ignored = _FromConfig("task_store_errors_even_if_ignored")
    acks_late = _FromConfig("task_acks_late")
    reject_on_worker_lost = _FromConfig("task_reject_on_worker_lost")
    track_started = _FromConfig("task_track_started")
    serializer = _FromConfig("task_serializer")

    _options: dict[str, Any]
    _signature: inspect.Signature | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {type(self).__name__} has no run() method")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # state of the current call -------------------------------------------------
    @property
    def request(self) -> Request:
        """The request being executed in this green thread (or a blank one)."""
        return _current_request.get() or _DIRECT

    # calling ---------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        """Send the task with these arguments; shortcut for :meth:`apply_async`."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> "AsyncResult":
        """Send the task.

        Options: ``countdown`` (seconds), ``eta`` (datetime), ``expires``
        (seconds or datetime), ``queue``, ``routing_key``, ``exchange``,
        ``priority``, ``task_id``, ``headers``, ``serializer``, ``compression``,
        ``time_limit``, ``soft_time_limit``, ``ignore_result``, ``link``,
        ``link_error``, ``retry``, ``retry_policy``.
        """
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, task_id=options.get("task_id"), link=options.get("link"),
                              link_error=options.get("link_error"))
        if self.typing:
            self.check_arguments(args, kwargs)
        parent = _current_request.get()
        if parent is not None and not parent.is_eager:
            options.setdefault("root_id", parent.root_id or parent.id)
            options.setdefault("parent_id", parent.id)
        if self.expires is not None:
            options.setdefault("expires", self.expires)
        if options.get("ignore_result") is None:
            options["ignore_result"] = self.ignore_result
        return self.app.send_task(self.name, args, kwargs, task=self, **options)

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError now if the task could not be called with these arguments."""
        sig = self._signature
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              *, task_id: str | None = None, retries: int = 0, throw: bool | None = None,
              link: Any = None, link_error: Any = None, **options: Any) -> "EagerResult":
        """Run the task here and now, as a worker would (retries included)."""
        from greenq.execute import apply_eagerly
        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id=task_id, retries=retries,
                             throw=throw, link=link, link_error=link_error)

    def AsyncResult(self, task_id: str) -> "AsyncResult":  # noqa: N802 - Celery's name
        return self.app.AsyncResult(task_id, name=self.name)

    def signature(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                  immutable: bool = False, **options: Any) -> "Signature":
        from greenq.canvas import Signature
        return Signature(self.name, args, kwargs, options, immutable=immutable, app=self.app)

    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> "Signature":
        return self.signature(args, kwargs, immutable=True)

    # inside a task -------------------------------------------------------------------
    def retry(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: datetime | None = None,
              countdown: float | None = None, max_retries: int | None = None, **options: Any) -> Retry:
        """Send this task again with the same id and ``retries + 1``, then raise :class:`Retry`.

        Raises:
            Retry: always (unless ``throw=False``): let it propagate.
            MaxRetriesExceededError: ``max_retries`` reached and no ``exc`` given.
            BaseException: ``exc`` itself when ``max_retries`` is reached.
        """
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("task called directly, not retried", None, None)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}]: max_retries ({limit}) exceeded; "
                f"args: {request.args!r} kwargs: {request.kwargs!r}")
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when = countdown if eta is None else eta
        if not request.is_eager:
            delivery = request.delivery_info or {}
            route: dict[str, Any] = {}
            if delivery.get("exchange"):
                route = {"exchange": delivery["exchange"], "routing_key": delivery.get("routing_key")}
            elif delivery.get("routing_key"):
                route = {"queue": delivery["routing_key"]}
            self.app.send_task(
                self.name, request.args if args is None else args, request.kwargs if kwargs is None else kwargs,
                task=self, task_id=request.id, retries=request.retries + 1,
                countdown=None if eta is not None else countdown, eta=eta,
                expires=_epoch_to_datetime(request.expires),
                time_limit=request.time_limit, soft_time_limit=request.soft_time_limit,
                root_id=request.root_id, parent_id=request.parent_id, group_id=request.group,
                group_index=request.group_index, ignore_result=request.ignore_result,
                link=request.callbacks, link_error=request.errbacks, chain=request.chain,
                reply_to=request.reply_to, priority=request.priority, **route, **options)
        error = Retry(exc=exc, when=when)
        if throw:
            raise error
        return error

    def backoff_countdown(self, retries: int) -> float:
        """Seconds before autoretry number ``retries + 1``: exponential, capped, jittered."""
        factor = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(float(self.retry_backoff_max), factor * (2 ** retries))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)
        return max(0.0, countdown)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a custom state (e.g. ``PROGRESS``) for this or another task."""
        task_id = task_id or self.request.id
        if not task_id:
            raise ValueError("update_state needs a task_id outside a running task")
        self.app.backend.store_result(task_id, meta, state or "PENDING", request=self.request)

    # hooks a base class may override ---------------------------------------------------
    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called in the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called in the worker after the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any],
                   kwargs: Mapping[str, Any], einfo: str) -> None:
        """Called in the worker after the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: Sequence[Any],
                 kwargs: Mapping[str, Any], einfo: str) -> None:
        """Called in the worker when the task is retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Sequence[Any],
                     kwargs: Mapping[str, Any], einfo: str | None) -> None:
        """Called in the worker after every run, whatever the outcome."""


def _epoch_to_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def create_task(app: "App", fn: Callable[..., Any], options: dict[str, Any]) -> Task:
    """Build, register and return the task object for ``fn`` (used by ``@app.task``)."""
    if not callable(fn):
        raise ConfigurationError(f"@app.task needs a function, got {fn!r}")
    unknown = [k for k in options if k not in TASK_OPTIONS]
    if unknown:
        raise ConfigurationError(
            f"task {fn.__qualname__}: unknown option {unknown[0]!r}{suggest(unknown[0], TASK_OPTIONS)}")
    base = options.pop("base", Task)
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise ConfigurationError(f"task {fn.__qualname__}: base must be a subclass of greenq.Task, got {base!r}")
    options = _check_options(options)
    bind = options.pop("bind", False)
    name = options.pop("name", None) or app.gen_task_name(fn)
    config_backed = {k: options.pop(k) for k in list(options) if TASK_OPTIONS[k] is not None}
    attrs: dict[str, Any] = {
        "app": app,
        "name": name,
        "run": fn if bind else staticmethod(fn),
        "__module__": fn.__module__,
        "__doc__": fn.__doc__,
        "__qualname__": fn.__qualname__,
        "__wrapped__": fn,
        **options,
    }
    cls: type[Task] = type(fn.__name__, (base,), attrs)
    task = cls()
    task._options = dict(config_backed)
    try:
        signature = inspect.signature(fn)
        if bind:
            params = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=params)
        cls._signature = signature
    except (TypeError, ValueError):
        cls._signature = None
    return app.register_task(task)


def set_current_request(request: Request | None) -> contextvars.Token:
    return _current_request.set(request)


def reset_current_request(token: contextvars.Token) -> None:
    _current_request.reset(token)
