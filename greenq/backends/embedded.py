"""The embedded result store: SQLite in the greenq data directory.

No server needed, and shared by every process on the machine that uses the
same data directory (``$GREENQ_HOME``, default ``./.greenq``): a worker in one
terminal stores, ``add.delay(2, 2).get()`` in another reads.  WAL mode lets
readers and the writer work at once, and results stored by many green
threads at once are written in one transaction (group commit).  ``get()`` polls with a short backoff
(5 ms growing to 200 ms), since SQLite has no notifications.
Expired results are deleted by :meth:`cleanup`, which the worker runs
at start and then every ``result_expires / 10`` seconds at most hourly.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from greenq import states
from greenq.backends.base import Backend, GroupCommit

SCHEMA = """
CREATE TABLE IF NOT EXISTS taskmeta (
    task_id    TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    meta       TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS taskmeta_expires ON taskmeta (expires_at);
"""

UPSERT = """
INSERT INTO taskmeta (task_id, status, meta, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    status = excluded.status, meta = excluded.meta, expires_at = excluded.expires_at
WHERE taskmeta.status != 'SUCCESS'
"""


class EmbeddedBackend(Backend):

    def __init__(self, app: Any, url: str | None = None) -> None:
        super().__init__(app, url)
        if url and url.startswith("sqlite://"):
            self.path = url[len("sqlite://"):]  # sqlite:///abs/path or sqlite://rel/path
        else:
            from greenq.embedded import data_dir
            self.path = os.path.join(data_dir(app), "results.sqlite3")
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._lock: Any = None
        self._writes = GroupCommit(self._write_many)

    def _connection(self) -> sqlite3.Connection:
        # One connection per process, used under a lock.  Not per thread: in a
        # gevent-patched process "thread-local" means per green thread, which
        # would open a connection per task.  Created lazily, after patching,
        # and again after a fork.
        conn = self._conn
        if conn is None or self._conn_pid != os.getpid():
            self._lock = threading.Lock()
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self._conn, self._conn_pid = conn, os.getpid()
        return conn

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        expires_at = time.time() + self.expires if self.expires else None
        payload = self.encode(meta)
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8")
        self._writes.submit((task_id, state, payload, expires_at))

    def _write_many(self, rows: list[tuple[str, str, str, float | None]]) -> None:
        conn = self._connection()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(UPSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _row_meta(self, row: tuple[str, float | None] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        payload, expires_at = row
        if expires_at is not None and expires_at < time.time():
            return None
        return self.decode(payload)

    def _get(self, task_id: str) -> dict[str, Any] | None:
        conn = self._connection()
        with self._lock:
            row = conn.execute("SELECT meta, expires_at FROM taskmeta WHERE task_id = ?", (task_id,)).fetchone()
        return self._row_meta(row)

    def get_many_meta(self, task_ids: list[str]) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        conn = self._connection()
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = conn.execute(
                    f"SELECT task_id, meta, expires_at FROM taskmeta WHERE task_id IN ({marks})", chunk).fetchall()
            for task_id, payload, expires_at in rows:
                meta = self._row_meta((payload, expires_at))
                if meta is not None:
                    found[task_id] = meta
        return [found.get(t) or {"status": states.PENDING, "result": None, "traceback": None,
                                 "children": [], "date_done": None, "task_id": t} for t in task_ids]

    def _forget(self, task_id: str) -> None:
        conn = self._connection()
        with self._lock:
            conn.execute("DELETE FROM taskmeta WHERE task_id = ?", (task_id,))

    def cleanup(self) -> int:
        conn = self._connection()
        with self._lock:
            return conn.execute("DELETE FROM taskmeta WHERE expires_at < ?", (time.time(),)).rowcount

    def close(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.close()
        self._conn = None

