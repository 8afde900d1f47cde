"""A small app with the tasks most integration tests need."""
from __future__ import annotations

import os
import time

from greenq import App

app = App(
    "basic",
    task_default_queue=os.environ.get("GREENQ_TEST_QUEUE", "celery"),
    control_exchange=os.environ.get("GREENQ_TEST_CONTROL_EXCHANGE", "celery"),
    event_exchange=os.environ.get("GREENQ_TEST_EVENT_EXCHANGE", "celeryev"),
    result_expires=3600,
)


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task
def fail(message="boom"):
    raise ValueError(message)


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(acks_late=True)
def sleep_late(seconds):
    time.sleep(seconds)
    return seconds


@app.task(bind=True, max_retries=3, default_retry_delay=0.05)
def retry_until(self, attempts):
    if self.request.retries < attempts:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task(bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries, "hostname": self.request.hostname,
            "is_eager": self.request.is_eager, "routing_key": self.request.delivery_info.get("routing_key")}
