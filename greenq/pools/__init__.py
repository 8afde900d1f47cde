"""Concurrency models.  The only package in greenq that imports gevent or eventlet.

``patch(name)`` monkey-patches the process for a green pool and must run
before anything else that opens sockets or creates locks is imported; the
``greenq`` command does it before it imports the user's app.
``create_pool(name, limit)`` builds the pool a worker runs tasks in.
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from greenq.exceptions import ConfigurationError, PatchError

if TYPE_CHECKING:
    from greenq.pools.base import BasePool

POOLS = {
    "gevent": "greenq.pools.gevent:GeventPool",
    "eventlet": "greenq.pools.eventlet:EventletPool",
    "threads": "greenq.pools.threads:ThreadPool",
    "solo": "greenq.pools.solo:SoloPool",
    "prefork": "greenq.pools.prefork:PreforkPool",
}
GREEN_POOLS = ("gevent", "eventlet")

# Modules that, once imported, keep references to unpatched sockets, locks or
# ssl objects: patching after them is what makes green workers hang or hit
# ssl's RecursionError (gevent#1016, celery#8168).
PATCH_SENSITIVE = (
    "ssl", "kombu", "amqp", "redis", "urllib3", "requests", "httpx", "httpcore",
    "pymongo", "psycopg", "psycopg2", "pika", "grpc", "botocore", "aiohttp",
    "dns", "sqlalchemy",
)

_patched: str | None = None


def check_pool_name(name: str) -> str:
    if name not in POOLS:
        raise ConfigurationError(
            f"unknown pool {name!r}: choose one of {', '.join(POOLS)}")
    return name


def imported_too_early() -> list[str]:
    """Names of patch-sensitive modules already imported in this process."""
    return [name for name in PATCH_SENSITIVE if name in sys.modules]


def patched_with() -> str | None:
    """'gevent' or 'eventlet' if this process is monkey-patched, else None."""
    if _patched:
        return _patched
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        return "gevent"
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket"):
        return "eventlet"
    return None


def patch(name: str, *, strict: bool = True) -> None:
    """Monkey-patch the process for pool ``name`` (no-op for non-green pools).

    Raises:
        PatchError: the process is already patched by the other green
            library, or (with ``strict``) modules that must be patched were
            imported first; the message names them and says what to do.
    """
    global _patched
    check_pool_name(name)
    if name not in GREEN_POOLS:
        return
    current = patched_with()
    if current == name:
        _patched = name
        return
    if current is not None:
        raise PatchError(f"this process is already patched by {current}; it cannot also use -P {name}")
    early = imported_too_early()
    if early and strict:
        raise PatchError(
            f"-P {name} must patch the process before these modules are imported, "
            f"but they already were: {', '.join(early)}. Start the worker with "
            f"`greenq worker -P {name}` (it patches first), or call "
            f"greenq.pools.patch({name!r}) at the very top of your program, before other "
            "imports. To start anyway, set worker_strict_patching=False.")
    if name == "gevent":
        from gevent import monkey
        monkey.patch_all()
    else:
        import eventlet
        eventlet.monkey_patch()
    _patched = name


def create_pool(name: str, limit: int, **options: object) -> "BasePool":
    """Build pool ``name`` with ``limit`` slots.

    A green pool requires the process to be patched for it already (see
    :func:`patch`): using gevent in an unpatched process would block the
    whole worker on the first socket call, so it is refused.
    """
    check_pool_name(name)
    if limit < 1:
        raise ConfigurationError(f"concurrency must be at least 1, got {limit}")
    current = patched_with()
    if name in GREEN_POOLS and current != name:
        raise PatchError(
            f"-P {name} needs the process patched for {name} before the worker starts; "
            f"it is {'patched for ' + current if current else 'not patched'}. "
            f"Use `greenq worker -P {name}` or call greenq.pools.patch({name!r}) first.")
    module_name, _, cls_name = POOLS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"pool {name!r} needs a package that is not installed ({exc.name}): "
            f"pip install 'greenq[{name}]'") from exc
    return getattr(module, cls_name)(limit, **options)


def default_concurrency(name: str) -> int:
    """Slots a pool gets when -c is not given."""
    import os
    if name in GREEN_POOLS:
        return 1000
    if name == "solo":
        return 1
    return os.cpu_count() or 2
