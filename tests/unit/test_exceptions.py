"""Exceptions survive the trip through a result backend: same class, same message."""
from __future__ import annotations

import json
import os

import pytest

from greenq import App, states
from greenq import exceptions as gexc
from greenq.exceptions import GreenqError

pytestmark = pytest.mark.timeout(10)

with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "celery_golden.json")) as _f:
    GOLDEN_RESULTS = json.load(_f)["results"]


class PaymentDeclined(Exception):
    def __init__(self, code, reason):
        super().__init__(code, reason)


@pytest.fixture
def backend(tmp_path):
    app = App("proj", broker="memory://", backend=f"sqlite://{tmp_path}/results.sqlite3")
    yield app.backend
    app.close()


def round_trip(backend, exc):
    meta = backend.make_meta("id", exc, states.FAILURE)
    data = json.loads(backend.encode(meta))
    return backend.exception_to_python(data["result"])


@pytest.mark.parametrize("exc", [
    ValueError("bad value"),
    KeyError("missing"),
    ZeroDivisionError("division by zero"),
    OSError(2, "No such file"),
    PaymentDeclined(402, "card expired"),
    gexc.TimeLimitExceeded(5.0),
    gexc.SoftTimeLimitExceeded(2.0),
    gexc.TaskRevokedError("expired"),
    gexc.MaxRetriesExceededError("can't retry"),
])
def test_same_class_and_message(backend, exc):
    back = round_trip(backend, exc)
    assert type(back) is type(exc)
    assert back.args == exc.args
    assert str(back) == str(exc)


def test_greenq_exceptions_are_stored_under_celerys_names(backend):
    expected = {
        gexc.TimeLimitExceeded: "billiard.exceptions",
        gexc.SoftTimeLimitExceeded: "billiard.exceptions",
        gexc.TaskRevokedError: "celery.exceptions",
        gexc.MaxRetriesExceededError: "celery.exceptions",
        gexc.NotRegistered: "celery.exceptions",
    }
    for cls, module in expected.items():
        stored = backend.prepare_exception(cls("x"))
        assert stored == {"exc_type": cls.__name__, "exc_message": ["x"], "exc_module": module}


def test_exceptions_are_stored_exactly_as_celery_stores_them(backend):
    for name, celery_stored in GOLDEN_RESULTS["exceptions"].items():
        exc = {"ValueError": ValueError("bad value"), "KeyError": KeyError("k"),
               "TaskRevokedError": gexc.TaskRevokedError("expired")}[name]
        assert backend.prepare_exception(exc) == celery_stored


def test_celery_stored_exceptions_come_back_as_python_and_greenq_classes(backend):
    golden = GOLDEN_RESULTS["exceptions"]
    value_error = backend.exception_to_python(golden["ValueError"])
    assert type(value_error) is ValueError and str(value_error) == "bad value"
    revoked = backend.exception_to_python(golden["TaskRevokedError"])
    assert isinstance(revoked, gexc.TaskRevokedError) and isinstance(revoked, GreenqError)
    assert str(revoked) == "expired"


def test_unknown_exception_class_keeps_its_name_and_message(backend):
    back = backend.exception_to_python(
        {"exc_type": "QuotaExceeded", "exc_message": ["over quota"], "exc_module": "some_service.errors"})
    assert type(back).__name__ == "QuotaExceeded" and str(back) == "over quota"
    assert isinstance(back, Exception)


def test_reading_a_result_never_imports_an_unrelated_module(backend):
    import sys
    assert "antigravity" not in sys.modules
    back = backend.exception_to_python({"exc_type": "Boom", "exc_message": ["x"], "exc_module": "antigravity"})
    assert "antigravity" not in sys.modules
    assert type(back).__name__ == "Boom"


def test_non_json_arguments_are_stored_as_their_repr(backend):
    class Thing:
        def __repr__(self):
            return "<Thing 7>"

    back = round_trip(backend, ValueError(Thing(), {"k": Thing()}))
    assert back.args == ("<Thing 7>", {"k": "<Thing 7>"})
