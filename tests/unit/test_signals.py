"""Signals: receivers are called in order, filtered by sender; a failing one is logged, never fatal."""
from __future__ import annotations

import logging

import pytest

from greenq import App, signals
from greenq.signals import Signal

pytestmark = pytest.mark.timeout(10)


def test_receivers_get_sender_and_arguments_in_connection_order():
    sig = Signal("demo")
    calls = []
    sig.connect(lambda sender=None, **kw: calls.append(("first", sender, kw["value"])))
    sig.connect(lambda sender=None, **kw: calls.append(("second", sender, kw["value"])))
    sig.send(sender="me", value=1)
    assert calls == [("first", "me", 1), ("second", "me", 1)]


def test_connect_is_idempotent_and_disconnect_removes():
    sig = Signal("demo")
    calls = []

    def receiver(sender=None, **kw):
        calls.append(sender)

    assert sig.connect(receiver) is receiver
    sig.connect(receiver)
    sig.send(sender="x")
    assert calls == ["x"]
    assert sig.disconnect(receiver) is True
    assert sig.disconnect(receiver) is False
    sig.send(sender="y")
    assert calls == ["x"]


def test_sender_filter_matches_the_object_or_its_name():
    app = App("proj", broker="memory://", backend="disabled://")

    @app.task(name="proj.a")
    def a():
        pass

    sig = Signal("demo")
    seen = []
    sig.connect(lambda sender=None, **kw: seen.append("by-name"), sender="proj.a")
    sig.connect(lambda sender=None, **kw: seen.append("by-task"), sender=a)
    sig.connect(lambda sender=None, **kw: seen.append("other"), sender="proj.b")
    sig.send(sender=a)
    assert seen == ["by-name", "by-task"]


def test_a_failing_receiver_is_logged_and_the_others_still_run(caplog):
    sig = Signal("demo")
    calls = []

    def broken(sender=None, **kw):
        raise ValueError("receiver bug")

    sig.connect(broken)
    sig.connect(lambda sender=None, **kw: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger="greenq.signals"):
        responses = sig.send(sender="me")
    assert calls == ["after"]
    assert isinstance(responses[0][1], ValueError)
    assert "signal demo: receiver" in caplog.text and "receiver bug" in caplog.text
    assert "Traceback" in caplog.text


def test_non_callable_receiver_is_refused():
    with pytest.raises(TypeError, match="receiver must be callable"):
        Signal("demo").connect("not a function")


def test_task_signals_fire_around_an_eager_call_even_when_receivers_fail(caplog):
    app = App("proj", broker="memory://", backend="disabled://")

    @app.task(name="proj.double")
    def double(x):
        return 2 * x

    seen = []

    def prerun(sender=None, task_id=None, **kw):
        seen.append(("prerun", kw["args"]))
        raise RuntimeError("prerun receiver bug")

    def success(sender=None, result=None, **kw):
        seen.append(("success", result))

    def postrun(sender=None, state=None, retval=None, **kw):
        seen.append(("postrun", state, retval))

    pairs = [(signals.task_prerun, prerun), (signals.task_success, success), (signals.task_postrun, postrun)]
    for sig, receiver in pairs:
        sig.connect(receiver, sender="proj.double")
    try:
        assert double.apply((21,)).get() == 42
    finally:
        for sig, receiver in pairs:
            sig.disconnect(receiver)
    assert seen == [("prerun", [21]), ("success", 42), ("postrun", "SUCCESS", 42)]
    assert "prerun receiver bug" in caplog.text


def test_publish_signals_see_the_headers(caplog):
    app = App("proj", broker="memory://", backend="disabled://", task_default_queue="signals-q")
    seen = []

    def before(sender=None, headers=None, routing_key=None, **kw):
        seen.append(("before", sender, headers["id"], routing_key))
        raise RuntimeError("before_task_publish receiver bug")

    def after(sender=None, headers=None, **kw):
        seen.append(("after", sender, headers["id"]))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    try:
        app.send_task("proj.x", task_id="id-1")
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
        app.close()
    assert seen == [("before", "proj.x", "id-1", "signals-q"), ("after", "proj.x", "id-1")]
