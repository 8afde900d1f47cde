"""The MongoDB backend: Celery's document layout, interop with Celery's backend.

Runs against a real server when GREENQ_TEST_MONGODB_URL is set (e.g.
mongodb://127.0.0.1:27017/greenq_test).  Without it (no MongoDB server can be
installed on this project's machines) it runs against mongomock, an in-memory
implementation of pymongo's API: that checks the documents greenq writes and
reads, the filters and the upsert rule, but not the server's own behaviour
(network, indexes, concurrency).  docs/backends.md says the same.
"""
from __future__ import annotations

import os
import uuid

import pytest

from greenq import App, states

pytestmark = pytest.mark.timeout(30)

REAL_URL = os.environ.get("GREENQ_TEST_MONGODB_URL")


@pytest.fixture
def mongo(monkeypatch):
    """(url, client) for a real server, or a mongomock client patched in."""
    if REAL_URL:
        import pymongo
        client = pymongo.MongoClient(REAL_URL)
        yield REAL_URL, client
        client.close()
        return
    mongomock = pytest.importorskip("mongomock")
    client = mongomock.MongoClient("mongodb://127.0.0.1:27017")
    import greenq.backends.mongodb as module
    monkeypatch.setattr(module, "MongoClient", lambda *args, **kwargs: client)
    yield "mongodb://127.0.0.1:27017/greenq_test", client


@pytest.fixture
def app(mongo):
    url, _ = mongo
    db = f"greenq_test_{uuid.uuid4().hex[:8]}"
    application = App("mongo-test", backend=url.rsplit("/", 1)[0] + "/" + db)
    yield application
    mongo[1].drop_database(db)
    application.close()


def test_document_layout_is_celerys(app):
    app.backend.mark_as_done("t-1", {"answer": 42})
    doc = app.backend.collection.find_one({"_id": "t-1"})
    assert doc["status"] == states.SUCCESS
    assert doc["result"] == '{"answer": 42}'  # serialized, as Celery stores it
    assert doc["traceback"] is None and doc["children"] == []
    assert doc["date_done"] is not None and "task_id" not in doc
    assert app.backend.collection.name == "celery_taskmeta"


def test_success_is_never_overwritten(app):
    app.backend.mark_as_done("t-2", 1)
    app.backend.mark_as_failure("t-2", ValueError("a late duplicate run"))
    assert app.AsyncResult("t-2").get(timeout=1) == 1


def test_failure_round_trips_as_the_same_exception(app):
    app.backend.mark_as_failure("t-3", KeyError("missing"), "Traceback ...")
    result = app.AsyncResult("t-3")
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=1)
    assert result.traceback == "Traceback ..."


def test_pending_and_forget(app):
    result = app.AsyncResult("t-4")
    assert result.state == states.PENDING
    app.backend.mark_as_done("t-4", "x")
    assert result.get(timeout=1) == "x"
    result.forget()
    assert app.AsyncResult("t-4").state == states.PENDING


def test_cleanup_deletes_only_expired(app):
    from datetime import datetime, timedelta, timezone
    app.backend.mark_as_done("fresh", 1)
    app.backend.mark_as_done("old", 2)
    app.backend.collection.update_one(
        {"_id": "old"}, {"$set": {"date_done": datetime.now(timezone.utc) - timedelta(days=2)}})
    assert app.backend.cleanup() == 1
    assert app.AsyncResult("fresh").state == states.SUCCESS
    assert app.AsyncResult("old").state == states.PENDING


def test_stock_celery_reads_greenq_results_and_the_other_way(app, mongo):
    celery = pytest.importorskip("celery")
    url, client = mongo
    app.backend.mark_as_done("g-1", [1, "two"])
    app.backend.mark_as_failure("g-2", KeyError("k"))
    capp = celery.Celery("c", backend=app.backend.url)
    if not REAL_URL:
        capp.backend._connection = client
    assert capp.AsyncResult("g-1").get(timeout=2) == [1, "two"]
    with pytest.raises(KeyError):
        capp.AsyncResult("g-2").get(timeout=2)
    capp.backend.store_result("c-1", {"from": "celery"}, states.SUCCESS)
    assert app.AsyncResult("c-1").get(timeout=2) == {"from": "celery"}


def test_unknown_settings_are_rejected(mongo):
    from greenq.exceptions import ConfigurationError
    url, _ = mongo
    application = App("x", backend=url, mongodb_backend_settings={"databse": "x"})
    with pytest.raises(ConfigurationError, match="databse"):
        _ = application.backend
