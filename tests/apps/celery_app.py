"""A stock Celery app with the same task names as tests.apps.basic, for the
interop tests (a greenq client sends, a Celery worker runs).  Configured from
the same environment variables as the greenq test apps."""
from __future__ import annotations

import os

from celery import Celery

app = Celery("celery_peer", broker=os.environ.get("GREENQ_BROKER_URL"),
             backend=os.environ.get("GREENQ_RESULT_BACKEND"))
app.conf.update(
    task_default_queue=os.environ.get("GREENQ_TEST_QUEUE", "celery"),
    control_exchange=os.environ.get("GREENQ_TEST_CONTROL_EXCHANGE", "celery"),
    event_exchange=os.environ.get("GREENQ_TEST_EVENT_EXCHANGE", "celeryev"),
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tests.apps.basic.add")
def add(x, y):
    return x + y


@app.task(name="tests.apps.basic.fail")
def fail(message="boom"):
    raise ValueError(message)


@app.task(name="tests.apps.basic.whoami", bind=True)
def whoami(self):
    return {"id": self.request.id, "retries": self.request.retries, "hostname": self.request.hostname,
            "is_eager": self.request.is_eager, "routing_key": self.request.delivery_info.get("routing_key")}
