"""What every benchmarked worker shares: settings from the environment, one
HTTP client, and the progress markers the driver reads.

Environment (set by ``bench/foundation.py``):

    BENCH_RUN         prefix of every Redis key and queue this run creates
    BENCH_REDIS_URL   redis://127.0.0.1:6379/5
    BENCH_RESULTS     1: store results (Redis backend); 0: results ignored
    BENCH_EXPECTED    tasks the worker will run; the done marker is written at this count
    BENCH_CONCURRENCY green threads per worker (the HTTP pool is sized from it)

Markers, written by the worker process itself (plain Redis ``SET``; a few per
run, so they cost nothing measurable):

    <run>:ready     {"at": epoch, "cpu": process CPU seconds}    when the system says it is ready
    <run>:progress  count, every 1000 tasks                      for the driver's stall detection
    <run>:done      {"at", "cpu", "count", "errors", "first"}    when the BENCH_EXPECTED-th task is done

"Done" is counted in each system's own after-the-task hook, which runs after
the result is stored (greenq and Celery ``task_postrun``, Dramatiq
``after_process_message``, Huey ``SIGNAL_COMPLETE``/``SIGNAL_ERROR``).
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

RUN = os.environ.get("BENCH_RUN", "bench-manual")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
RESULTS = os.environ.get("BENCH_RESULTS", "1") == "1"
EXPECTED = int(os.environ.get("BENCH_EXPECTED", "0"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "1000"))
QUEUE = f"{RUN}-q"

_session: Any = None
_session_lock = threading.Lock()


def session() -> Any:
    """One requests.Session per process, its pool sized to the concurrency.

    Created on first use, after the worker patched the process."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                import requests
                from requests.adapters import HTTPAdapter
                s = requests.Session()
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=CONCURRENCY, max_retries=0)
                s.mount("http://", adapter)
                _session = s
    return _session


def fetch(url: str) -> int:
    """The io-fanout task body, the same in every system and in the floor."""
    response = session().get(url, timeout=60)
    response.content  # noqa: B018  read the body so the connection goes back to the pool
    return response.status_code


class Progress:
    """Counts finished tasks in this process and writes the markers."""

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.first: float | None = None
        self.ready_written = False
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import redis
            self._client = redis.Redis.from_url(REDIS_URL)
        return self._client

    def ready(self) -> None:
        if not self.ready_written:
            self.ready_written = True
            self.client.set(f"{RUN}:ready", json.dumps({"at": time.time(), "cpu": time.process_time(),
                                                        "pid": os.getpid()}))

    def task_done(self, failed: bool = False) -> None:
        self.count += 1
        if failed:
            self.errors += 1
        if self.count == 1:
            self.first = time.time()
        if self.count == EXPECTED:
            self.client.set(f"{RUN}:done", json.dumps({
                "at": time.time(), "cpu": time.process_time(), "count": self.count,
                "errors": self.errors, "first": self.first, "pid": os.getpid()}))
        elif self.count % 1000 == 0:
            self.client.set(f"{RUN}:progress", self.count)


progress = Progress()
