"""Result backends, chosen by URL scheme.

=============  ==========================================================
scheme         backend
=============  ==========================================================
redis(s)://    :class:`greenq.backends.redis.RedisBackend` (Celery's layout)
mongodb://     :class:`greenq.backends.mongodb.MongoBackend` (Celery's layout)
embedded://    :class:`greenq.backends.embedded.EmbeddedBackend` (SQLite)
sqlite:///path the same, at an explicit file
disabled://    :class:`greenq.backends.base.DisabledBackend`
=============  ==========================================================
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from greenq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from greenq.backends.base import Backend

BACKENDS = {
    "redis": "greenq.backends.redis:RedisBackend",
    "rediss": "greenq.backends.redis:RedisBackend",
    "mongodb": "greenq.backends.mongodb:MongoBackend",
    "mongodb+srv": "greenq.backends.mongodb:MongoBackend",
    "embedded": "greenq.backends.embedded:EmbeddedBackend",
    "sqlite": "greenq.backends.embedded:EmbeddedBackend",
    "disabled": "greenq.backends.base:DisabledBackend",
}
EXTRAS = {"redis": "redis", "rediss": "redis", "mongodb": "mongodb", "mongodb+srv": "mongodb"}


def backend_from_url(app: Any, url: str) -> "Backend":
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    target = BACKENDS.get(scheme)
    if target is None:
        raise ConfigurationError(
            f"unknown result backend {url.split('://')[0]!r}: use one of "
            + ", ".join(f"{s}://" for s in BACKENDS))
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(scheme, scheme)
        raise ConfigurationError(
            f"result backend {scheme}:// needs {exc.name}, which is not installed: "
            f"pip install 'greenq[{extra}]'") from exc
    return getattr(module, cls_name)(app, url)
