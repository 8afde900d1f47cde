"""Test support: real services, unique names, and workers in subprocesses.

Services come from the environment, with the machine's defaults:

* ``GREENQ_TEST_REDIS_URL``  (default ``redis://127.0.0.1:6379/12``; tests only
  touch keys of their own queues, never FLUSHDB)
* ``GREENQ_TEST_AMQP_URL``   (default ``amqp://guest:guest@127.0.0.1:5672//``)
* ``GREENQ_TEST_MONGODB_URL`` (no default: without it the MongoDB backend is
  tested against mongomock, see docs/backends.md)

With ``CI=true`` a missing Redis or RabbitMQ fails the test instead of skipping it.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("GREENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
AMQP_URL = os.environ.get("GREENQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1.0):
            return True
    except OSError:
        return False


def require(name: str) -> str:
    """The URL of service ``name`` ("redis" or "amqp"); skip (fail on CI) if it is down."""
    url = {"redis": REDIS_URL, "amqp": AMQP_URL}[name]
    if not _reachable(url):
        message = f"{name} is not reachable at {url}"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing service is a failure)")
        pytest.skip(message)
    return url


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def broker_urls(name: str) -> tuple[str, str]:
    """(broker_url, result_backend) for a broker kind: embedded, redis or amqp."""
    if name == "embedded":
        return "embedded://", "embedded://"
    if name == "redis":
        url = require("redis")
        return url, url
    return require("amqp"), require("redis")


class WorkerProcess:
    """A ``greenq worker`` in a subprocess, with its log captured."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self._log: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=ROOT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._log.append(line)

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until a log line matches ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.log)
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker log never matched {pattern!r} (exit {self.proc.poll()}):\n{self.log[-4000:]}")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (warm shutdown) and wait; SIGKILL if it does not stop in time."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"worker did not stop within {timeout}s:\n{self.log[-4000:]}") from None
        self._reader.join(2)
        return self.proc.returncode


@contextlib.contextmanager
def worker(app: str = "tests.apps.basic", *, broker: str, backend: str | None = None, pool: str = "threads",
           concurrency: int = 4, queue: str | None = None, home: str | None = None, args: tuple[str, ...] = (),
           env: dict[str, str] | None = None, ready: bool = True, loglevel: str = "INFO") -> Iterator[WorkerProcess]:
    """Run ``greenq worker -A app`` for the duration of the block."""
    home = home or tempfile.mkdtemp(prefix="greenq-test-")
    full_env = {**os.environ, "GREENQ_BROKER_URL": broker, "GREENQ_RESULT_BACKEND": backend or broker,
                "GREENQ_HOME": home, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1", **(env or {})}
    if queue:
        full_env["GREENQ_TEST_QUEUE"] = queue
    argv = [sys.executable, "-m", "greenq", "worker", "-A", app, "-P", pool, "-c", str(concurrency),
            "-l", loglevel, *args]
    proc = WorkerProcess(argv, full_env)
    try:
        if ready:
            proc.wait_for_log(r"ready: -P")
        yield proc
    finally:
        proc.stop()


def client_app(broker: str, backend: str | None = None, queue: str | None = None, home: str | None = None,
               **settings: Any) -> Any:
    """A fresh App for the test process, configured like a worker started by :func:`worker`."""
    from greenq import App
    if home:
        settings["embedded_home"] = home
    if queue:
        settings["task_default_queue"] = queue
    return App("client", broker=broker, backend=backend or broker, **settings)
