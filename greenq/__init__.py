"""greenq: a task-queue worker for I/O-bound work on gevent green threads.

The package is deliberately light to import: nothing here touches kombu,
sockets or threads, so that ``greenq worker -P gevent`` can monkey-patch the
process before any of them is loaded.  Public names are loaded on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from greenq.exceptions import (  # noqa: E402  (exceptions are import-light)
    ConfigurationError,
    GreenqError,
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)

_LAZY = {
    "App": "greenq.app",
    "Task": "greenq.task",
    "AsyncResult": "greenq.result",
    "GroupResult": "greenq.result",
    "ResultSet": "greenq.result",
    "signature": "greenq.canvas",
    "Signature": "greenq.canvas",
    "group": "greenq.canvas",
    "chain": "greenq.canvas",
    "states": "greenq",
    "signals": "greenq",
}

__all__ = [
    "App", "Task", "AsyncResult", "GroupResult", "ResultSet",
    "signature", "Signature", "group", "chain", "states", "signals",
    "GreenqError", "ConfigurationError", "NotRegistered", "Retry", "Reject",
    "Ignore", "MaxRetriesExceededError", "SoftTimeLimitExceeded",
    "TimeLimitExceeded", "TaskRevokedError", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'greenq' has no attribute {name!r}")
    if module == "greenq":
        value: Any = importlib.import_module(f"greenq.{name}")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
