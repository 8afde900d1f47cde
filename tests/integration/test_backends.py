"""One contract every result backend passes, then each backend's own layout.

To add a backend, subclass :class:`BackendContract` and give it a
``make_backend`` fixture: a function ``(**settings) -> Backend``.  MongoDB
runs against ``GREENQ_TEST_MONGODB_URL`` when set, else mongomock.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest

from greenq import App, states
from greenq.exceptions import BackendError, TaskRevokedError, TimeoutError
from tests.support import require

pytestmark = pytest.mark.timeout(30)

with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "celery_golden.json")) as _f:
    GOLDEN = json.load(_f)["results"]
CELERY_META_KEYS = set(GOLDEN["success"])


def new_id() -> str:
    return str(uuid.uuid4())


def wait_until(predicate, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class BackendContract:
    """What every result backend must do."""

    @pytest.fixture
    def backend(self, make_backend):
        return make_backend()

    def test_an_unknown_id_is_pending(self, backend):
        meta = backend.get_task_meta(new_id())
        assert meta["status"] == states.PENDING and meta["result"] is None

    def test_success_is_stored_in_celerys_shape(self, backend):
        task_id = new_id()
        backend.mark_as_done(task_id, {"answer": [4, "four"]})
        meta = backend.get_task_meta(task_id)
        assert CELERY_META_KEYS <= set(meta)
        assert meta["status"] == states.SUCCESS
        assert meta["result"] == {"answer": [4, "four"]}
        assert meta["task_id"] == task_id and meta["date_done"]

    def test_states_move_forward_until_ready(self, backend):
        task_id = new_id()
        backend.mark_as_started(task_id, pid=123, hostname="w@h")
        assert backend.get_task_meta(task_id)["status"] == states.STARTED
        assert backend.get_task_meta(task_id)["date_done"] is None
        backend.mark_as_retry(task_id, OSError("later"))
        assert backend.get_task_meta(task_id)["status"] == states.RETRY
        backend.mark_as_done(task_id, 1)
        assert backend.get_task_meta(task_id)["status"] == states.SUCCESS

    def test_success_is_never_overwritten(self, backend):
        task_id = new_id()
        backend.mark_as_done(task_id, "first")
        backend.mark_as_failure(task_id, ValueError("late duplicate"))
        backend.mark_as_revoked(task_id)
        backend.mark_as_started(task_id)
        meta = backend.get_task_meta(task_id)
        assert (meta["status"], meta["result"]) == (states.SUCCESS, "first")

    def test_a_failure_may_be_replaced_by_a_later_success(self, backend):
        task_id = new_id()
        backend.mark_as_failure(task_id, ValueError("first try"))
        backend.mark_as_done(task_id, "second try")
        assert backend.get_task_meta(task_id)["result"] == "second try"

    def test_failure_comes_back_as_the_same_exception(self, backend):
        task_id = new_id()
        backend.mark_as_failure(task_id, KeyError("missing"), "Traceback (most recent call last): ...")
        result = backend.app.AsyncResult(task_id)
        assert result.state == states.FAILURE and result.failed()
        assert result.traceback.startswith("Traceback")
        with pytest.raises(KeyError, match="missing"):
            result.get(timeout=5)
        assert isinstance(result.get(timeout=5, propagate=False), KeyError)

    def test_revoked_raises_task_revoked(self, backend):
        task_id = new_id()
        backend.mark_as_revoked(task_id, "expired")
        result = backend.app.AsyncResult(task_id)
        assert result.state == states.REVOKED
        with pytest.raises(TaskRevokedError, match="expired"):
            result.get(timeout=5)

    def test_forget_makes_it_pending_again(self, backend):
        task_id = new_id()
        backend.mark_as_done(task_id, 1)
        backend.app.AsyncResult(task_id).forget()
        assert backend.get_task_meta(task_id)["status"] == states.PENDING

    def test_custom_states_from_update_state(self, backend):
        task_id = new_id()
        backend.store_result(task_id, {"done": 3, "total": 10}, "PROGRESS")
        result = backend.app.AsyncResult(task_id)
        assert result.state == "PROGRESS" and result.info == {"done": 3, "total": 10}
        assert not result.ready()

    def test_get_waits_for_a_result_stored_later_by_someone_else(self, backend, make_backend):
        task_id = new_id()
        writer = make_backend()  # another connection, as a worker would have
        timer = threading.Timer(0.3, writer.mark_as_done, (task_id, "late"))
        timer.start()
        try:
            started = time.monotonic()
            assert backend.app.AsyncResult(task_id).get(timeout=10) == "late"
            assert time.monotonic() - started < 3.0
        finally:
            timer.cancel()
            timer.join(5)  # the writer may still be reading its reply: let it finish before teardown closes it

    def test_get_times_out_with_a_clear_error(self, backend):
        with pytest.raises(TimeoutError, match="not ready after 0.3s"):
            backend.app.AsyncResult(new_id()).get(timeout=0.3)

    def test_many_results_are_read_together(self, backend):
        ids = [new_id() for _ in range(50)]
        for index, task_id in enumerate(ids):
            backend.mark_as_done(task_id, index)
        got = dict(backend.wait_for_many(ids, timeout=5))
        assert [got[t]["result"] for t in ids] == list(range(50))
        assert [m["status"] for m in backend.get_many_meta(ids + [new_id()])][-1] == states.PENDING

    def test_extended_results_carry_the_request(self, make_backend):
        from greenq.protocol import Request
        backend = make_backend(result_extended=True)
        task_id = new_id()
        request = Request(id=task_id, name="proj.add", args=[1, 2], kwargs={"z": 3}, hostname="w@h",
                          retries=1, delivery_info={"routing_key": "work"})
        backend.mark_as_done(task_id, 3, request=request)
        meta = backend.get_task_meta(task_id)
        assert {k: meta[k] for k in ("name", "args", "kwargs", "worker", "retries", "queue")} == {
            "name": "proj.add", "args": [1, 2], "kwargs": {"z": 3}, "worker": "w@h", "retries": 1, "queue": "work"}

    def test_results_expire_after_result_expires(self, make_backend):
        backend = make_backend(result_expires=1)
        task_id = new_id()
        backend.mark_as_done(task_id, 1)
        assert backend.get_task_meta(task_id)["status"] == states.SUCCESS

        def gone():
            backend.cleanup()  # what the worker runs periodically; a no-op where the store expires keys itself
            return backend.get_task_meta(task_id)["status"] == states.PENDING
        assert wait_until(gone, timeout=5)


@pytest.fixture
def _apps():
    apps = []
    yield apps
    for app in apps:
        app.close()


class TestEmbeddedBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, tmp_path, _apps):
        def make(**settings):
            app = App("proj", broker="embedded://", backend="embedded://", embedded_home=str(tmp_path), **settings)
            _apps.append(app)
            return app.backend
        return make

    def test_cleanup_deletes_expired_rows(self, make_backend):
        backend = make_backend(result_expires=1)
        backend.mark_as_done(new_id(), 1)
        assert wait_until(lambda: backend.cleanup() == 1, timeout=5)
        assert backend.cleanup() == 0

    def test_an_explicit_sqlite_path(self, tmp_path, _apps):
        path = tmp_path / "elsewhere" / "results.sqlite3"
        app = App("proj", broker="memory://", backend=f"sqlite://{path}")
        _apps.append(app)
        app.backend.mark_as_done("x", 1)
        assert path.exists()


class TestRedisBackend(BackendContract):
    @pytest.fixture
    def redis_url(self):
        return require("redis")

    @pytest.fixture
    def make_backend(self, redis_url, _apps):
        def make(**settings):
            app = App("proj", broker="memory://", backend=redis_url, **settings)
            _apps.append(app)
            return app.backend
        return make

    @pytest.fixture
    def raw(self, redis_url):
        import redis
        client = redis.Redis.from_url(redis_url)
        yield client
        client.close()

    def test_key_value_and_ttl_match_celery(self, backend, raw):
        task_id = new_id()
        backend.mark_as_done(task_id, 4)
        key = f"celery-task-meta-{task_id}"
        try:
            stored = json.loads(raw.get(key))
            assert set(stored) == CELERY_META_KEYS
            assert {k: stored[k] for k in ("status", "result", "traceback", "task_id")} == {
                "status": "SUCCESS", "result": 4, "traceback": None, "task_id": task_id}
            assert 86400 - 5 < raw.ttl(key) <= 86400  # result_expires defaults to one day, as in Celery
        finally:
            raw.delete(key)

    def test_result_expires_is_the_ttl(self, make_backend, raw):
        backend = make_backend(result_expires=120)
        task_id = new_id()
        backend.mark_as_done(task_id, 4)
        try:
            assert 115 < raw.ttl(f"celery-task-meta-{task_id}") <= 120
        finally:
            raw.delete(f"celery-task-meta-{task_id}")

    def test_every_store_is_published_on_the_key_channel(self, backend, raw):
        task_id = new_id()
        key = f"celery-task-meta-{task_id}"
        pubsub = raw.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(key)
        try:
            backend.mark_as_started(task_id)
            backend.mark_as_done(task_id, "ok")
            backend.mark_as_failure(task_id, ValueError("refused: SUCCESS is final"))
            published = []
            deadline = time.monotonic() + 5
            while len(published) < 2 and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
                if message:
                    published.append(json.loads(message["data"]))
            extra = pubsub.get_message(timeout=0.3)
            assert [m["status"] for m in published] == ["STARTED", "SUCCESS"]
            assert extra is None, "a refused overwrite must not be published"
            assert json.loads(raw.get(key)) == published[-1]
        finally:
            pubsub.close()
            raw.delete(key)

    def test_a_stock_celery_client_reads_greenq_results(self, backend, redis_url, raw):
        from celery import Celery
        celery_app = Celery("client", broker="memory://", backend=redis_url)
        ok, failed = new_id(), new_id()
        backend.mark_as_done(ok, [1, 2])
        backend.mark_as_failure(failed, ValueError("bad input"))
        try:
            assert celery_app.AsyncResult(ok).get(timeout=5) == [1, 2]
            with pytest.raises(ValueError, match="bad input"):
                celery_app.AsyncResult(failed).get(timeout=5)
        finally:
            raw.delete(f"celery-task-meta-{ok}", f"celery-task-meta-{failed}")
            celery_app.close()

    def test_greenq_reads_results_stored_by_stock_celery(self, backend, redis_url, raw):
        from celery import Celery
        celery_app = Celery("worker", broker="memory://", backend=redis_url)
        task_id = new_id()
        celery_app.backend.store_result(task_id, KeyError("from celery"), "FAILURE")
        try:
            with pytest.raises(KeyError, match="from celery"):
                backend.app.AsyncResult(task_id).get(timeout=5)
        finally:
            raw.delete(f"celery-task-meta-{task_id}")
            celery_app.close()

    def test_global_keyprefix(self, make_backend, raw):
        backend = make_backend(result_backend_transport_options={"global_keyprefix": "tenant1"})
        task_id = new_id()
        backend.mark_as_done(task_id, 1)
        try:
            assert raw.exists(f"tenant1_celery-task-meta-{task_id}")
            assert backend.app.AsyncResult(task_id).get(timeout=5) == 1
        finally:
            raw.delete(f"tenant1_celery-task-meta-{task_id}")

    def test_connection_pool_is_bounded(self, make_backend):
        backend = make_backend(result_max_connections=3)
        assert backend.pool.max_connections == 3


class TestMongoBackend(BackendContract):
    """Against GREENQ_TEST_MONGODB_URL when set, else mongomock (one in-memory server per test)."""

    @pytest.fixture
    def make_backend(self, _apps, monkeypatch):
        module = pytest.importorskip("greenq.backends.mongodb")
        url = os.environ.get("GREENQ_TEST_MONGODB_URL")
        database = f"greenq_contract_{uuid.uuid4().hex[:8]}"
        if url:
            url = url.rsplit("/", 1)[0] + "/" + database
        else:
            mongomock = pytest.importorskip("mongomock")
            server = mongomock.MongoClient("mongodb://127.0.0.1:27017")
            monkeypatch.setattr(module, "MongoClient", lambda *args, **kwargs: server)
            url = f"mongodb://127.0.0.1:27017/{database}"

        def make(**settings):
            app = App("proj", broker="memory://", backend=url, **settings)
            _apps.append(app)
            return app.backend
        yield make
        if os.environ.get("GREENQ_TEST_MONGODB_URL"):
            import pymongo
            client = pymongo.MongoClient(url)
            client.drop_database(database)
            client.close()


def test_disabled_backend_says_how_to_configure_one():
    app = App("proj", broker="memory://", backend="disabled://")
    app.backend.mark_as_done("x", 1)  # storing is a no-op, never an error
    with pytest.raises(BackendError, match="no result backend is configured.*result_backend"):
        app.AsyncResult("x").get(timeout=1)
    with pytest.raises(BackendError, match="GREENQ_RESULT_BACKEND"):
        _ = app.AsyncResult("x").state


def test_a_backend_whose_package_is_missing_names_the_extra(monkeypatch):
    import sys

    from greenq.exceptions import ConfigurationError
    monkeypatch.setitem(sys.modules, "greenq.backends.mongodb", None)
    app = App("proj", broker="memory://", backend="mongodb://127.0.0.1/x")
    with pytest.raises(ConfigurationError, match=r"pip install 'greenq\[mongodb\]'"):
        _ = app.backend
