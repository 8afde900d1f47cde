"""Settings: one table of names, defaults and checks.

Names are lowercase and match Celery's where Celery has the same idea.  An
unknown name is an error that suggests the closest known name, so a typo in a
settings module fails at start-up instead of being silently ignored.
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from greenq.exceptions import ConfigurationError


@dataclass(frozen=True)
class Option:
    default: Any
    types: tuple[type, ...] = ()
    help: str = ""
    check: Callable[[Any], str | None] | None = None  # returns an error text or None


def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "must be 0 or more"


def _serializer_list(value: Any) -> str | None:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        return "must be a list of serializer or content-type names, e.g. ['json']"
    return None


NUM = (int, float)
OPT = type(None)

SETTINGS: dict[str, Option] = {
    # broker
    "broker_url": Option(None, (str, OPT), "broker URL; unset means the embedded broker"),
    "broker_transport_options": Option({}, (dict,), "passed to kombu's transport"),
    "broker_connection_timeout": Option(4.0, NUM, "seconds to wait when connecting", _positive),
    "broker_connection_retry_on_startup": Option(True, (bool,)),
    "broker_connection_max_retries": Option(None, (int, OPT), "None retries for ever", _non_negative),
    "broker_heartbeat": Option(120.0, NUM + (OPT,), "AMQP heartbeat in seconds", _non_negative),
    "broker_pool_limit": Option(None, (int, OPT), "producer connections; None sizes from concurrency", _positive),
    "broker_pool_acquire_timeout": Option(10.0, NUM, "seconds to wait for a pooled connection", _positive),
    # results
    "result_backend": Option(None, (str, OPT), "result URL; unset: embedded with the embedded broker, else disabled"),
    "result_backend_transport_options": Option({}, (dict,)),
    "result_serializer": Option("json", (str,)),
    "result_accept_content": Option(None, (list, tuple, OPT), check=lambda v: _serializer_list(v) if v else None),
    "result_expires": Option(86400.0, NUM + (OPT,), "seconds results are kept", _positive),
    "result_extended": Option(False, (bool,)),
    "result_max_connections": Option(None, (int, OPT), "Redis result connections; None sizes from concurrency", _positive),
    "result_namespace": Option("celery", (str,), "key prefix word: celery-task-meta-<id>"),
    "mongodb_backend_settings": Option({}, (dict,)),
    # serialization
    "task_serializer": Option("json", (str,)),
    "accept_content": Option(["json"], (list, tuple), check=_serializer_list),
    "task_compression": Option(None, (str, OPT)),
    "task_message_max_size": Option(16 * 1024 * 1024, (int,), "bytes; larger messages are refused", _positive),
    # tasks
    "task_acks_late": Option(False, (bool,)),
    "task_acks_on_failure_or_timeout": Option(True, (bool,)),
    "task_reject_on_worker_lost": Option(False, (bool,)),
    "task_time_limit": Option(None, NUM + (OPT,), "seconds", _positive),
    "task_soft_time_limit": Option(None, NUM + (OPT,), "seconds", _positive),
    "task_track_started": Option(False, (bool,)),
    "task_ignore_result": Option(False, (bool,)),
    "task_store_errors_even_if_ignored": Option(False, (bool,)),
    "task_always_eager": Option(False, (bool,)),
    "task_eager_propagates": Option(False, (bool,)),
    "task_store_eager_result": Option(False, (bool,)),
    "task_default_queue": Option("celery", (str,)),
    "task_default_exchange": Option(None, (str, OPT), "None: the default (direct) exchange"),
    "task_default_exchange_type": Option("direct", (str,)),
    "task_default_routing_key": Option(None, (str, OPT)),
    "task_default_priority": Option(None, (int, OPT)),
    "task_default_rate_limit": Option(None, (str, int, float, OPT)),
    "task_default_retry_delay": Option(180.0, NUM, "seconds", _non_negative),
    "task_max_retries": Option(3, (int, OPT), check=_non_negative),
    "task_queues": Option(None, (list, tuple, dict, OPT)),
    "task_routes": Option(None, (), "a dict, a router function, a 'module:attr' path, or a list of these",
                          lambda v: None if v is None or isinstance(v, (dict, list, tuple, str)) or callable(v)
                          else "must be a dict, a router function, a 'module:attr' path or a list of these"),
    "task_create_missing_queues": Option(True, (bool,)),
    "task_queue_max_priority": Option(None, (int, OPT)),
    "task_publish_retry": Option(True, (bool,)),
    "task_publish_retry_policy": Option(
        {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}, (dict,)),
    "task_send_sent_event": Option(False, (bool,)),
    "task_protocol": Option(2, (int,), check=lambda v: None if v == 2 else "only protocol 2 is spoken"),
    # worker
    "worker_pool": Option(None, (str, OPT), "default for -P; gevent/eventlet are best chosen with -P"),
    "worker_concurrency": Option(None, (int, OPT), "default for -c", _positive),
    "worker_prefetch_multiplier": Option(4, (int,), check=_positive),
    "worker_eta_task_limit": Option(None, (int, OPT), "most ETA tasks held in memory; beyond it they are "
                                    "parked broker-side (or, where they cannot be, left in the broker)", _positive),
    "eta_parking_horizon": Option(600.0, NUM + (OPT,), "seconds: ETA tasks due later are parked broker-side "
                                  "(greenq/parking.py); None: hold every ETA task in memory", _positive),
    "eta_parking_prefix": Option("greenq-eta:", (str,), "names of the parking store's keys/queues"),
    "worker_shutdown_timeout": Option(10.0, NUM, "warm-shutdown drain deadline, seconds", _non_negative),
    "worker_disable_rate_limits": Option(False, (bool,)),
    "rate_limit_redis_url": Option(None, (str, OPT), "Redis for rate_limit_scope='global' buckets; "
                                   "default: the broker's URL if Redis, else the result backend's"),
    "rate_limit_key_prefix": Option("greenq-ratelimit:", (str,), "Redis key prefix of global buckets"),
    "worker_rate_limit_max_keys": Option(10000, (int,), "buckets kept per task type with rate_limit_key; "
                                         "the least recently used idle ones are dropped", _positive),
    "worker_send_task_events": Option(False, (bool,)),
    "worker_hijack_root_logger": Option(True, (bool,)),
    "worker_log_format": Option("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s", (str,)),
    "worker_state_db": Option(None, (str, OPT), "file keeping the revoked set across restarts (--statedb)"),
    "worker_blocking_threshold": Option(1.0, NUM + (OPT,), "green pools: report a task that holds the hub "
                                        "this many seconds (log and stats); 0 or None: off", _non_negative),
    "worker_stuck_task_exit_after": Option(
        10.0, NUM + (OPT,), "green pools: seconds after a hard time limit was raised into a task "
        "that still holds the hub (a blocking C call) before the worker stores its failure and exits "
        "with code 70 for its supervisor to restart it; 0 or None: never exit", _non_negative),
    "worker_revokes_max": Option(50000, (int,), check=_positive),
    "worker_revoke_expires": Option(10800.0, NUM, check=_positive),
    "worker_strict_patching": Option(True, (bool,), "refuse a green pool in a process patched too late"),
    "worker_max_tasks_per_child": Option(None, (int, OPT), check=_positive),
    "worker_max_memory_per_child": Option(None, (int, OPT), "KiB", _positive),
    "worker_pool_start_method": Option(
        "spawn", (str,), "how child processes start (prefork, --cpu-pool): spawn or forkserver, never fork",
        lambda v: None if v in ("spawn", "forkserver") else "must be 'spawn' or 'forkserver'"),
    "worker_process_prefetch": Option(1, (int,), "requests sent ahead to a busy child process, so it "
                                      "starts the next at once; 0: idle children only", _non_negative),
    "worker_cpu_pool": Option(0, (int,), "child processes for CPU-bound tasks in a green or threads "
                              "worker (--cpu-pool); 0: none", _non_negative),
    "worker_cpu_pool_nice": Option(10, (int,), "niceness added to CPU-pool processes, so the kernel "
                                   "runs the green worker first on a busy machine; 0: none",
                                   lambda v: None if 0 <= v <= 19 else "must be between 0 and 19"),
    "worker_cpu_queues": Option((), (list, tuple), "queues whose tasks run in the CPU pool (--cpu-queues)"),
    # time and names
    "timezone": Option("UTC", (str,)),
    "enable_utc": Option(True, (bool,)),
    "control_exchange": Option("celery", (str,)),
    "worker_enable_remote_control": Option(True, (bool,), "answer remote-control commands (inspect, control)"),
    "event_exchange": Option("celeryev", (str,)),
    "event_serializer": Option("json", (str,)),
    "worker_heartbeat_interval": Option(2.0, NUM, "seconds between worker-heartbeat events (Celery's 2.0)",
                                        _positive),
    "worker_send_events": Option(True, (bool,), "send worker events (online, heartbeat, offline) at all"),
    "imports": Option((), (list, tuple)),
    "include": Option((), (list, tuple)),
    # the embedded default
    "embedded_home": Option(None, (str, OPT), "data directory; default $GREENQ_HOME or ./.greenq"),
    "embedded_polling_interval": Option(0.05, NUM, "seconds between polls of the embedded broker", _positive),
}

ENV_OVERRIDES = {"broker_url": "GREENQ_BROKER_URL", "result_backend": "GREENQ_RESULT_BACKEND",
                 "embedded_home": "GREENQ_HOME"}


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_setting(name: str, value: Any) -> Any:
    """Validate one setting and return it; raise ConfigurationError if wrong."""
    option = SETTINGS.get(name)
    if option is None:
        raise ConfigurationError(
            f"unknown setting {name!r}{suggest(name, SETTINGS)}; "
            "see greenq/config.py for the list of settings")
    wrong_type = option.types and (not isinstance(value, option.types)
                                   or isinstance(value, bool) and bool not in option.types)
    if wrong_type:
        wanted = " or ".join(sorted({t.__name__ if t is not OPT else "None" for t in option.types}))
        raise ConfigurationError(f"setting {name!r} must be {wanted}, got {value!r}")
    if option.check is not None:
        problem = option.check(value)
        if problem:
            raise ConfigurationError(f"setting {name!r} {problem} (got {value!r})")
    return value


class Settings(Mapping[str, Any]):
    """The app's configuration: defaults, then environment, then what the user set.

    Read with attributes (``app.conf.broker_url``) or items; write with
    attribute assignment or :meth:`update`, which validate every name.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_changes", {})

    # A setting is resolved on first read (what the user set, else the
    # environment, else the default) and then kept as a plain attribute, so
    # reading it on the per-task path is an ordinary attribute lookup.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        changes = object.__getattribute__(self, "_changes")
        if name in changes:
            value = changes[name]
        else:
            env = ENV_OVERRIDES.get(name)
            option = SETTINGS.get(name)
            if option is None:
                raise AttributeError(f"unknown setting {name!r}{suggest(name, SETTINGS)}")
            if env and os.environ.get(env):
                value = os.environ[env]
            else:
                default = option.default
                value = default.copy() if isinstance(default, (dict, list)) else default
        object.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self._changes[name] = check_setting(name, value)
        object.__setattr__(self, name, value)

    def update(self, other: Mapping[str, Any] | None = None, **kwargs: Any) -> None:  # type: ignore[override]
        items = {**(other or {}), **kwargs}
        for name, value in items.items():
            check_setting(name, value)
        self._changes.update(items)
        for name, value in items.items():
            object.__setattr__(self, name, value)

    def is_set(self, name: str) -> bool:
        """True when the user (or the environment) set ``name``."""
        env = ENV_OVERRIDES.get(name)
        return name in self._changes or bool(env and os.environ.get(env))

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)

    def changes(self) -> dict[str, Any]:
        return dict(self._changes)

    def humanize(self, with_defaults: bool = False) -> dict[str, Any]:
        """Settings as a dict, with secrets in URLs masked (for ``inspect conf``)."""
        names = SETTINGS if with_defaults else self._changes
        return {name: mask_url(getattr(self, name)) if name.endswith(("_url", "backend")) else getattr(self, name)
                for name in names}


def mask_url(value: Any) -> Any:
    """Hide the password in a URL: ``redis://:secret@h`` -> ``redis://:**@h``."""
    if not isinstance(value, str) or "@" not in value or "://" not in value:
        return value
    scheme, rest = value.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:**@{host}"


def load_object(path: str) -> Any:
    """Import ``"pkg.module:attr"`` or ``"pkg.module.attr"`` or a module ``"pkg.module"``."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
        module = importlib.import_module(module_name)
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(path)
    except ImportError:
        module_name, _, attr = path.rpartition(".")
        if not module_name:
            raise
        return getattr(importlib.import_module(module_name), attr)


def settings_from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """Read settings from a module, class, object or mapping.

    With ``namespace="GREENQ"`` only ``GREENQ_*`` names are read, and they are
    lowercased: ``GREENQ_BROKER_URL`` becomes ``broker_url``.  Without a
    namespace every lowercase public name is read.
    """
    if isinstance(obj, str):
        obj = load_object(obj)
    items = obj.items() if isinstance(obj, Mapping) else (
        (k, getattr(obj, k)) for k in dir(obj))
    found: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else None
    for key, value in items:
        if prefix:
            if not key.startswith(prefix):
                continue
            found[key[len(prefix):].lower()] = value
        elif key.islower() and not key.startswith("_") and not callable(value) \
                and not type(value).__name__ == "module":
            found[key] = value
    for key in found:
        if key not in SETTINGS:
            where = f"{prefix}{key.upper()}" if prefix else key
            raise ConfigurationError(
                f"unknown setting {where!r}{suggest(key, SETTINGS)} in {getattr(obj, '__name__', obj)!r}")
    return found
