"""Protocol v2 against golden messages captured from stock Celery.

tests/fixtures/celery_golden.json is written by tests/fixtures/regenerate.py
from a real ``celery`` install; these tests prove greenq builds the same
messages and reads Celery's.
"""
from __future__ import annotations

import base64
import json
import os
import pickle
from datetime import datetime, timezone

import pytest
from kombu.message import Message

from greenq import App
from greenq.exceptions import ContentDisallowed, InvalidMessage, MessageTooLarge
from greenq.protocol import decode, parse_iso, saferepr, task_message

pytestmark = pytest.mark.timeout(10)

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "celery_golden.json")
with open(FIXTURE) as _f:
    GOLDEN = json.load(_f)
MESSAGES = GOLDEN["messages"]
JSON_ONLY = frozenset({"application/json"})


def kombu_message(body: bytes, headers: dict | None, content_type: str = "application/json",
                  properties: dict | None = None, delivery_info: dict | None = None) -> Message:
    return Message(body=body, delivery_tag="tag-1", content_type=content_type, content_encoding="utf-8",
                   headers=headers, properties=properties or {},
                   delivery_info=delivery_info or {"exchange": "", "routing_key": "celery"})


def celery_message(case: str) -> Message:
    golden = MESSAGES[case]
    return kombu_message(base64.b64decode(golden["body_base64"]), dict(golden["headers"]),
                         golden["content_type"], dict(golden["properties"]))


def greenq_options(case: str) -> dict:
    """The fixture's apply_async options, as task_message() takes them."""
    golden = MESSAGES[case]
    options = dict(golden["input"]["options"])
    options.pop("priority", None)  # a routing property, not a header
    callbacks, errbacks = golden["body"][2]["callbacks"], golden["body"][2]["errbacks"]
    return {**options, "callbacks": callbacks, "errbacks": errbacks}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_greenq_builds_the_headers_and_body_celery_builds(case):
    golden = MESSAGES[case]
    given = golden["input"]
    headers, properties, body = task_message(
        given["name"], given["task_id"], tuple(given["args"]), given["kwargs"], **greenq_options(case))
    assert set(headers) == set(golden["headers"]), "header names differ from Celery's"
    for name, value in golden["headers"].items():
        if name == "origin":
            assert headers["origin"].startswith("gen") and "@" in headers["origin"]
        elif name == "ignore_result":
            assert bool(headers[name]) == bool(value)  # Celery sends null for "not set"
        else:
            assert headers[name] == value, f"header {name!r}"
    assert properties["correlation_id"] == golden["properties"]["correlation_id"]
    assert json.loads(json.dumps(body)) == golden["body"]


def test_timelimit_header_is_hard_then_soft_as_celery_sends_it():
    assert MESSAGES["kwargs_and_limits"]["headers"]["timelimit"] == [30, 20]
    headers, _, _ = task_message("t", "id", (), {}, time_limit=30, soft_time_limit=20)
    assert headers["timelimit"] == [30, 20]


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_greenq_publishes_what_celery_publishes(case):
    """The whole send path (App.send_task -> kombu), read back as a consumer sees it."""
    golden = MESSAGES[case]
    given = golden["input"]
    app = App("proj", broker="memory://", backend="disabled://", task_default_queue=f"golden-{case}")
    options = {k: v for k, v in given["options"].items()}
    for key in ("eta", "expires"):
        if key in options:
            options[key] = datetime.fromisoformat(options[key])
    body_embed = golden["body"][2]
    try:
        app.send_task(given["name"], tuple(given["args"]), given["kwargs"], task_id=given["task_id"],
                      link=body_embed["callbacks"], link_error=body_embed["errbacks"], **options)
        with app.connection() as conn:
            message = conn.SimpleQueue(f"golden-{case}", no_ack=True).get(timeout=5)
            assert message.content_type == golden["content_type"]
            assert message.content_encoding == golden["content_encoding"]
            assert set(message.headers) == set(golden["headers"])
            for name in ("task", "id", "root_id", "eta", "expires", "retries", "timelimit", "argsrepr",
                         "kwargsrepr", "lang", "stamps"):
                assert message.headers[name] == golden["headers"][name], name
            assert json.loads(message.body) == golden["body"]
            assert message.properties["correlation_id"] == given["task_id"]
            assert message.properties["delivery_mode"] == golden["properties"]["delivery_mode"]
            if "priority" in given["options"]:
                assert message.properties["priority"] == golden["properties"]["priority"]
    finally:
        app.close()


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_greenq_decodes_celery_messages(case):
    golden = MESSAGES[case]
    given = golden["input"]
    request = decode(celery_message(case), accept=JSON_ONLY)
    assert request.id == given["task_id"]
    assert request.name == given["name"]
    assert request.args == given["args"]
    assert request.kwargs == given["kwargs"]
    assert request.root_id == given["task_id"]
    assert request.retries == given["options"].get("retries", 0)
    assert request.time_limit == given["options"].get("time_limit")
    assert request.soft_time_limit == given["options"].get("soft_time_limit")
    assert request.callbacks == golden["body"][2]["callbacks"]
    assert request.errbacks == golden["body"][2]["errbacks"]
    assert request.correlation_id == given["task_id"]
    for field in ("eta", "expires"):
        expected = given["options"].get(field)
        got = getattr(request, field)
        assert got == (datetime.fromisoformat(expected).timestamp() if expected else None), field


def test_decoded_priority_comes_from_the_message_properties():
    request = decode(celery_message("ignore_result_priority"), accept=JSON_ONLY)
    assert request.priority == 6
    assert request.ignore_result is True


# ---------------------------------------------------------------- bad input
def _good_headers(**changes):
    headers = dict(MESSAGES["simple"]["headers"])
    headers.update(changes)
    return headers


GOOD_BODY = base64.b64decode(MESSAGES["simple"]["body_base64"])

BAD_MESSAGES = [
    # (why, body, headers, content_type, expected error, words in the message)
    ("no headers at all", GOOD_BODY, None, "application/json", InvalidMessage, "no 'task' header"),
    ("protocol v1 (everything in the body)",
     json.dumps({"task": "proj.add", "id": "x", "args": [1, 2], "kwargs": {}, "utc": True}).encode(),
     {}, "application/json", InvalidMessage, "protocol v1"),
    ("empty id", GOOD_BODY, _good_headers(id=""), "application/json", InvalidMessage, "'id'"),
    ("task name not a string", GOOD_BODY, _good_headers(task=5), "application/json", InvalidMessage, "'task'"),
    ("body is not JSON", b"{not json", _good_headers(), "application/json", InvalidMessage, "cannot be decoded"),
    ("body has two parts", b"[[1], {}]", _good_headers(), "application/json", InvalidMessage, "[args, kwargs, embed]"),
    ("args is a string", b'["1, 2", {}, {}]', _good_headers(), "application/json", InvalidMessage, "args must be a list"),
    ("args is a mapping", b'[{"x": 1}, {}, {}]', _good_headers(), "application/json", InvalidMessage,
     "args must be a list"),
    ("kwargs is a list", b"[[], [1], {}]", _good_headers(), "application/json", InvalidMessage, "kwargs must be"),
    ("embed is a list", b"[[], {}, [1]]", _good_headers(), "application/json", InvalidMessage, "embed must be"),
    ("negative retries", GOOD_BODY, _good_headers(retries=-1), "application/json", InvalidMessage, "'retries'"),
    ("retries is text", GOOD_BODY, _good_headers(retries="2"), "application/json", InvalidMessage, "'retries'"),
    ("timelimit is a number", GOOD_BODY, _good_headers(timelimit=5), "application/json", InvalidMessage,
     "'timelimit'"),
    ("timelimit is text", GOOD_BODY, _good_headers(timelimit=["5", None]), "application/json", InvalidMessage,
     "timelimit[0]"),
    ("eta is not a date", GOOD_BODY, _good_headers(eta="tomorrow"), "application/json", InvalidMessage,
     "'eta'"),
    ("expires is a list", GOOD_BODY, _good_headers(expires=[1]), "application/json", InvalidMessage, "'expires'"),
    ("pickle when only JSON is accepted", pickle.dumps(([1, 2], {}, {})), _good_headers(),
     "application/x-python-serialize", ContentDisallowed, "not accepted"),
    ("yaml when only JSON is accepted", b"[[1], {}, {}]", _good_headers(), "application/x-yaml",
     ContentDisallowed, "not accepted"),
]


@pytest.mark.parametrize("why, body, headers, content_type, error, words", BAD_MESSAGES,
                         ids=[case[0] for case in BAD_MESSAGES])
def test_bad_messages_are_refused_with_a_reason(why, body, headers, content_type, error, words):
    with pytest.raises(error) as info:
        decode(kombu_message(body, headers, content_type), accept=JSON_ONLY)
    assert words in str(info.value)


def test_oversized_body_is_refused_before_it_is_decoded():
    body = json.dumps([["x" * 2000], {}, {}]).encode()
    with pytest.raises(MessageTooLarge, match="over task_message_max_size"):
        decode(kombu_message(body, _good_headers()), accept=JSON_ONLY, max_size=1000)
    assert decode(kombu_message(body, _good_headers()), accept=JSON_ONLY, max_size=len(body)).args == ["x" * 2000]


BODIES_FOR_BOTH_JSON_PATHS = [
    # (why, the body's [args, kwargs, embed]) -- plain JSON takes decode()'s fast path,
    # the rest go through kombu's registry and its object_hook
    ("plain values", [[1, "two", None, True, 2.5], {"key": ["list"]}, {"callbacks": None}]),
    ("non-ASCII text, written with \\u escapes", [["h\u00e9llo \u2603"], {"name": "\u00e5"}, {}]),
    ("a kombu datetime", [[datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)], {}, {}]),
    ("the marker as a plain string", [["__type__"], {"__type__": "not a marker"}, {}]),
]


@pytest.mark.parametrize("why, value", BODIES_FOR_BOTH_JSON_PATHS, ids=[case[0] for case in BODIES_FOR_BOTH_JSON_PATHS])
def test_json_bodies_decode_to_what_kombu_decodes(why, value):
    from kombu.serialization import dumps, loads
    _, _, body = dumps(value, serializer="json")
    body = body.encode() if isinstance(body, str) else body
    expected = loads(body, "application/json", "utf-8", accept=JSON_ONLY)
    for given in (body, body.decode()):
        request = decode(kombu_message(given, _good_headers()), accept=JSON_ONLY)
        assert [request.args, request.kwargs] == [list(expected[0]), expected[1]]
    assert type(request.args[0]) is type(expected[0][0])


@pytest.mark.parametrize("body", [b"[[1], {}, {}", b'[["\xff"], {}, {}]', b"[" * 100_000 + b"]" * 100_000,
                                  b"[[1], {}, {}] trailing"],
                         ids=["truncated", "not UTF-8", "nested too deep", "trailing data"])
def test_json_bodies_that_cannot_be_decoded_are_invalid(body):
    with pytest.raises(InvalidMessage, match="cannot be decoded"):
        decode(kombu_message(body, _good_headers()), accept=JSON_ONLY)


def test_decoded_request_has_fresh_containers_and_the_class_defaults():
    first = decode(celery_message("simple"), accept=JSON_ONLY)
    second = decode(celery_message("simple"), accept=JSON_ONLY)
    assert first.args is not second.args and first.headers is not second.headers
    assert first.task is None and first.acknowledged is False and first.handle is None
    first.acknowledged = True
    assert second.acknowledged is False


def test_pickle_is_decoded_only_when_explicitly_accepted():
    body = pickle.dumps(([1, 2], {}, {"callbacks": None}))
    request = decode(kombu_message(body, _good_headers(), "application/x-python-serialize"),
                     accept=frozenset({"application/json", "application/x-python-serialize"}))
    assert request.args == [1, 2]


def test_send_refuses_a_message_over_the_size_limit():
    from greenq.exceptions import MessageTooLarge as TooLarge
    app = App("proj", broker="memory://", backend="disabled://", task_message_max_size=100)
    try:
        with pytest.raises(TooLarge, match="over task_message_max_size"):
            app.send_task("proj.echo", ("x" * 500,))
    finally:
        app.close()


def test_send_refuses_args_that_are_not_a_sequence():
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        task_message("proj.add", "id", "1, 2", {})
    with pytest.raises(TypeError, match="kwargs must be a mapping"):
        task_message("proj.add", "id", (), [("x", 1)])


# ---------------------------------------------------------------- small helpers
@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", None),
    ("2030-01-02T03:04:05+00:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()),
    ("2030-01-02T03:04:05", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()),  # naive = UTC
    ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()),
    ("2030-01-02T05:04:05+02:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()),
    (1893553445.5, 1893553445.5),
])
def test_parse_iso(value, expected):
    assert parse_iso(value) == expected


def test_saferepr_is_bounded_and_survives_broken_reprs():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert len(saferepr("x" * 100_000)) <= 1024
    assert len(saferepr(list(range(100_000)))) <= 1024
    assert "Broken" in saferepr(Broken())  # a repr that raises never stops a publish
