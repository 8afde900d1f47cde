"""Bad input of every kind: the worker logs why (with the message id), rejects
without requeue, stays alive, and the good tasks around it still run."""
from __future__ import annotations

import json
import pickle

import pytest

from greenq.exceptions import NotRegistered
from greenq.protocol import task_message
from tests.integration.helpers import publish_raw, queue_depth, wait_until
from tests.support import client_app, unique, worker

pytestmark = pytest.mark.timeout(90)

MAX_SIZE = 4000


def headers_for(task_id, name="tests.apps.basic.add", **changes):
    headers, _, _ = task_message(name, task_id, (1, 2), {})
    headers.update(changes)
    return headers


def good_body(args=(1, 2)):
    return json.dumps([list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])


def bad_messages():
    """(label, body, headers, content type, log pattern that must appear once)."""
    ids = {label: unique(label) for label in ("malformed", "unknown", "pickle", "oversized", "args", "kwargs",
                                              "eta", "timelimit")}
    return [
        ("malformed body", b"{not json", headers_for(ids["malformed"]), "application/json",
         rf"rejected message {ids['malformed']} \(task 'tests.apps.basic.add'\): body cannot be decoded"),
        ("missing headers", good_body(), None, "application/json",
         r"rejected message \S+ \(task None\): not a Celery protocol v2 task message \(no 'task' header\)"),
        ("protocol v1", json.dumps({"task": "tests.apps.basic.add", "id": unique("v1"), "args": [1, 2],
                                    "kwargs": {}, "utc": True, "retries": 0}), {"lang": "py"},
         "application/json", r"protocol v1 messages are not accepted"),
        ("unknown task", good_body(), headers_for(ids["unknown"], name="tests.apps.nope"), "application/json",
         rf"rejected task tests.apps.nope\[{ids['unknown']}\]: not registered"),
        ("pickle refused", pickle.dumps(([1, 2], {}, {})), headers_for(ids["pickle"]),
         "application/x-python-serialize",
         rf"rejected message {ids['pickle']} .*content type 'application/x-python-serialize' is not accepted"),
        ("oversized", good_body(["x" * (MAX_SIZE + 100), 1]), headers_for(ids["oversized"]), "application/json",
         rf"rejected message {ids['oversized']} .*over task_message_max_size \({MAX_SIZE}\)"),
        ("args not a list", json.dumps(["1, 2", {}, {}]), headers_for(ids["args"]), "application/json",
         rf"rejected message {ids['args']} .*args must be a list, got str"),
        ("kwargs not a mapping", json.dumps([[1], [2], {}]), headers_for(ids["kwargs"]), "application/json",
         rf"rejected message {ids['kwargs']} .*kwargs must be a mapping, got list"),
        ("eta not a date", good_body(), headers_for(ids["eta"], eta="next tuesday"), "application/json",
         rf"rejected message {ids['eta']} .*header 'eta' is not an ISO-8601 date"),
        ("timelimit not a pair", good_body(), headers_for(ids["timelimit"], timelimit=30), "application/json",
         rf"rejected message {ids['timelimit']} .*header 'timelimit' must be \[hard, soft\]"),
    ], ids


@pytest.mark.parametrize("kind", ["embedded", "redis", "amqp"])
def test_worker_survives_bad_input_and_loses_nothing(kind, queue, home, request):
    from tests.support import broker_urls
    broker_url, backend_url = broker_urls(kind)
    with worker("tests.apps.scenarios", broker=broker_url, backend=backend_url, pool="threads", queue=queue,
                home=home, env={"GREENQ_TEST_MESSAGE_MAX_SIZE": str(MAX_SIZE)}) as proc:
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            before = [app.send_task("tests.apps.basic.add", (i, 0)) for i in range(5)]
            messages, ids = bad_messages()
            for _label, body, headers, content_type, _ in messages:
                publish_raw(app, queue, body, headers=headers, content_type=content_type)
            after = [app.send_task("tests.apps.basic.add", (i, 100)) for i in range(5)]

            assert [r.get(timeout=30) for r in before + after] == [*range(5), *range(100, 105)]
            for _label, _, _, _, pattern in messages:
                proc.wait_for_log(pattern, timeout=10)
            assert proc.proc.poll() is None, "the worker died"
            assert proc.log.count("rejected") == len(messages), "a bad message was redelivered or lost"
            assert "Traceback" not in proc.log

            # a client waiting on a rejected id gets an answer instead of waiting for ever
            with pytest.raises(NotRegistered, match="'tests.apps.nope' is not registered"):
                app.AsyncResult(ids["unknown"]).get(timeout=10)

            # rejected without requeue: nothing waits in the queue, and the worker still serves
            if kind != "embedded":
                assert wait_until(lambda: queue_depth(broker_url, queue) == 0, timeout=10, message="empty queue")
            assert app.send_task("tests.apps.basic.add", (20, 22)).get(timeout=20) == 42
        finally:
            app.close()
