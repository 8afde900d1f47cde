"""Tasks for the integration scenarios, on the same app as tests.apps.basic.

Coordination with the test process goes through marker files in
``$GREENQ_HOME/marks`` (the worker and the test share that directory on
every broker), so tests wait on facts ("the task has started") instead of
sleeping.
"""
from __future__ import annotations

import os
import time

from tests.apps.basic import app  # noqa: F401  (-A tests.apps.scenarios finds it)

if os.environ.get("GREENQ_TEST_MESSAGE_MAX_SIZE"):
    app.conf.task_message_max_size = int(os.environ["GREENQ_TEST_MESSAGE_MAX_SIZE"])

MARKS = os.path.join(os.environ.get("GREENQ_HOME", "."), "marks")


def mark_path(name: str) -> str:
    return os.path.join(MARKS, name)


def _mark(name: str, text: str = "") -> None:
    os.makedirs(MARKS, exist_ok=True)
    with open(mark_path(name), "a") as f:
        f.write(text + "\n")


def _wait_for_mark(name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(mark_path(name)):
            return True
        time.sleep(0.02)
    return False


@app.task(track_started=True)
def gated(name, timeout=20.0):
    """Say it started (mark ``<name>.started``), then wait for ``<name>.go``."""
    _mark(f"{name}.started")
    if not _wait_for_mark(f"{name}.go", timeout):
        raise TimeoutError(f"nobody opened gate {name}")
    return name


@app.task(acks_late=True)
def gated_late(name, timeout=20.0):
    """Like gated, acknowledged only when done; marks every run in ``<name>.runs``."""
    _mark(f"{name}.runs", "run")
    _mark(f"{name}.started")
    if not _wait_for_mark(f"{name}.go", timeout):
        raise TimeoutError(f"nobody opened gate {name}")
    return name


@app.task
def slow_first_time(name, seconds=60.0):
    """Runs for ``seconds`` the first time, returns at once when run again (requeued)."""
    first = not os.path.exists(mark_path(f"{name}.started"))
    _mark(f"{name}.started")
    if first:
        time.sleep(seconds)
        return "first run"
    return "second run"


@app.task
def counted(name, value):
    """Count runs (one line per run in ``<name>.runs``) and return ``value``."""
    _mark(f"{name}.runs", "run")
    return value


@app.task(ignore_result=True)
def quiet(name):
    _mark(f"{name}.done")
    return "not stored"


@app.task(bind=True, max_retries=2, default_retry_delay=0.1)
def retry_forever(self):
    raise self.retry(exc=ConnectionError(f"attempt {self.request.retries}"))


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=0.1, retry_jitter=False)
def autoretry(self, succeed_on):
    if self.request.retries < succeed_on:
        raise ConnectionError(f"attempt {self.request.retries}")
    return {"retries": self.request.retries, "id": self.request.id}


@app.task(bind=True, max_retries=2)
def retry_timed(self, name, mode):
    """Retries twice, one second apart (countdown= or eta=), recording each attempt's start."""
    _mark(f"{name}.attempts", repr(time.time()))
    if self.request.retries < 2:
        if mode == "eta":
            from datetime import datetime, timedelta, timezone
            raise self.retry(eta=datetime.now(timezone.utc) + timedelta(seconds=1))
        raise self.retry(countdown=1)
    return self.request.retries


@app.task(bind=True, max_retries=1, default_retry_delay=0)
def retry_without_exc(self):
    raise self.retry()


class CustomError(Exception):
    pass


@app.task
def fail_custom(message):
    raise CustomError(message)


@app.task(acks_late=True)
def slow_first_time_late(name, seconds=60.0):
    """slow_first_time, acknowledged only when done."""
    return slow_first_time(name, seconds)


if os.environ.get("GREENQ_TEST_VISIBILITY_TIMEOUT"):
    # Lets a Redis test see an unacked message of a killed worker come back
    # quickly, with unacked bookkeeping of its own so that no other test's
    # running work is restored by this short timeout.
    _queue = os.environ.get("GREENQ_TEST_QUEUE", "celery")
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["GREENQ_TEST_VISIBILITY_TIMEOUT"]),
        "unacked_restore_throttle": 1,
        "unacked_key": f"unacked.{_queue}",
        "unacked_index_key": f"unacked_index.{_queue}",
        "unacked_mutex_key": f"unacked_mutex.{_queue}",
        # a worker SIGKILLed while it holds kombu's restore mutex would block
        # every restore for the default 300 s
        "unacked_mutex_expire": 1,
    }


@app.task
def patched_with():
    """Which green library patched the worker process (None if none)."""
    import socket

    from greenq.pools import patched_with as current
    return {"patched": current(), "socket_module": socket.socket.__module__}
