"""MongoDB result backend in Celery's layout.

Documents live in ``celery_taskmeta`` (database from the URL path, default
``celery``)::

    {"_id": task_id, "status": "SUCCESS", "result": "<result, serialized>",
     "date_done": datetime, "traceback": None, "children": []}

``result`` is serialized with ``result_serializer`` (a JSON string by
default), the other fields are native BSON, as Celery stores them, so stock
Celery clients read greenq's results and the other way round.  A stored
SUCCESS is never replaced: the write's filter excludes it, so the check and
the write are one step.  Expired documents are removed by :meth:`cleanup`
(the worker runs it periodically), like Celery's ``backend_cleanup`` -- not
by a TTL index.  ``get()`` polls with a short backoff.

Settings: ``mongodb_backend_settings`` may set ``database``,
``taskmeta_collection`` and ``options`` (passed to ``MongoClient``).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import MongoClient, uri_parser
from pymongo.errors import DuplicateKeyError

from greenq import states
from greenq.backends.base import Backend, pending_meta

OPTIONAL_META = ("group_id", "parent_id", "name", "args", "kwargs", "worker", "retries", "queue")


class MongoBackend(Backend):

    def __init__(self, app: Any, url: str | None = None) -> None:
        super().__init__(app, url)
        settings = dict(app.conf.mongodb_backend_settings)
        parsed = uri_parser.parse_uri(url) if url else {}
        self.database_name = settings.pop("database", None) or parsed.get("database") or "celery"
        self.collection_name = settings.pop("taskmeta_collection", "celery_taskmeta")
        self.client_options = {"maxPoolSize": app.connection_pool_size(),
                               "serverSelectionTimeoutMS": int(app.conf.broker_connection_timeout * 1000),
                               **settings.pop("options", {})}
        if settings:
            from greenq.exceptions import ConfigurationError
            raise ConfigurationError(
                f"mongodb_backend_settings: unknown keys {sorted(settings)} "
                "(known: database, taskmeta_collection, options)")
        self._client: Any = None

    @property
    def collection(self) -> Any:
        if self._client is None:
            self._client = MongoClient(self.url, **self.client_options)
            collection = self._client[self.database_name][self.collection_name]
            collection.create_index("date_done", background=True)
        return self._client[self.database_name][self.collection_name]

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        document = {**meta, "_id": task_id, "result": self.encode(meta["result"]),
                    "date_done": datetime.now(timezone.utc) if meta["date_done"] else None}
        document.pop("task_id", None)
        query = {"_id": task_id, "status": {"$ne": states.SUCCESS}}
        for _ in range(2):  # a concurrent insert of the same id can raise once
            try:
                self.collection.replace_one(query, document, upsert=True)
                return
            except DuplicateKeyError:
                continue  # either a SUCCESS is stored (keep it) or a racing insert won

    def _meta(self, document: dict[str, Any]) -> dict[str, Any]:
        date_done = document.get("date_done")
        result = document.get("result")
        return {
            # stored only with a group or a parent, or with result_extended
            **{key: document[key] for key in OPTIONAL_META if key in document},
            "task_id": document["_id"],
            "status": document["status"],
            "result": self.decode(result) if isinstance(result, (str, bytes)) else result,
            "traceback": document.get("traceback"),
            "children": document.get("children") or [],
            "date_done": date_done.replace(tzinfo=timezone.utc).isoformat()
            if isinstance(date_done, datetime) else date_done,
        }

    def _get(self, task_id: str) -> dict[str, Any] | None:
        document = self.collection.find_one({"_id": task_id})
        return self._meta(document) if document else None

    def get_many_meta(self, task_ids: list[str]) -> list[dict[str, Any]]:
        found = {d["_id"]: self._meta(d) for d in self.collection.find({"_id": {"$in": task_ids}})}
        return [found.get(t) or pending_meta(t) for t in task_ids]

    def _forget(self, task_id: str) -> None:
        self.collection.delete_one({"_id": task_id})

    def cleanup(self) -> int:
        if not self.expires:
            return 0
        limit = datetime.now(timezone.utc) - timedelta(seconds=self.expires)
        return self.collection.delete_many({"date_done": {"$lt": limit}}).deleted_count

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
