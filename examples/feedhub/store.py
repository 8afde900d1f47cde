"""Where parsed entries go: one SQLite file, shared by every process on the machine.

``FEEDHUB_DB`` names the file; by default it is ``feedhub.sqlite3`` in the
greenq data directory (``$GREENQ_HOME``, else ``./.greenq``).  Entries are
keyed by their guid, so fetching a feed again stores only what is new.  With
workers on several machines, point this at a real database instead.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url        TEXT PRIMARY KEY,
    title      TEXT,
    format     TEXT,
    fetched_at REAL,
    entries    INTEGER
);
CREATE TABLE IF NOT EXISTS entries (
    guid       TEXT PRIMARY KEY,
    feed_url   TEXT NOT NULL,
    title      TEXT,
    link       TEXT,
    published  TEXT,
    author     TEXT,
    summary    TEXT
);
"""

_local = threading.local()


def path() -> str:
    configured = os.environ.get("FEEDHUB_DB")
    if configured:
        return configured
    home = os.environ.get("GREENQ_HOME") or os.path.join(os.getcwd(), ".greenq")
    return os.path.join(home, "feedhub.sqlite3")


def connection() -> sqlite3.Connection:
    """This thread's connection (created on first use, after any patching)."""
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "path", None) != path():
        os.makedirs(os.path.dirname(path()) or ".", exist_ok=True)
        conn = sqlite3.connect(path(), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        _local.conn, _local.path = conn, path()
    return conn


def save(url: str, title: str | None, version: str | None, entries: Iterable[dict[str, Any]]) -> int:
    """Store a feed's entries; returns how many were new."""
    rows = [(e["guid"], url, e.get("title"), e.get("link"), e.get("published"), e.get("author"), e.get("summary"))
            for e in entries]
    conn = connection()
    with conn:  # one transaction
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        new = conn.total_changes - before
        conn.execute("INSERT OR REPLACE INTO feeds VALUES (?, ?, ?, ?, ?)",
                     (url, title, version, time.time(), len(rows)))
    return new


def counts() -> dict[str, int]:
    conn = connection()
    return {"feeds": conn.execute("SELECT COUNT(*) FROM feeds").fetchone()[0],
            "entries": conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]}
