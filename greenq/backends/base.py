"""What every result backend shares: Celery's result layout and the contract.

A stored result ("meta") is a mapping::

    {"status": "SUCCESS", "result": 4, "traceback": None, "children": [],
     "date_done": "2026-11-22T10:00:00.123456+00:00", "task_id": "<id>"}

Exceptions are stored as ``{"exc_type", "exc_message", "exc_module"}`` and
come back as the same class when that class is available in the reading
process.  A stored SUCCESS is never overwritten.  Subclasses implement
:meth:`_store`, :meth:`_get`, :meth:`_forget`, and may override
:meth:`wait_for_many` with something better than polling.
"""
from __future__ import annotations

import builtins
import importlib
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from kombu.serialization import dumps, loads, prepare_accept_content

from greenq import exceptions as gexc
from greenq import states
from greenq.exceptions import BackendError, TimeoutError

logger = logging.getLogger(__name__)


def pending_meta(task_id: str) -> dict[str, Any]:
    return {"status": states.PENDING, "result": None, "traceback": None,
            "children": [], "date_done": None, "task_id": task_id}


class Backend:
    """Base class of result backends."""

    #: True when :meth:`wait_for_many` is woken by the store, not by polling
    supports_native_join = False

    def __init__(self, app: Any, url: str | None = None) -> None:
        self.app = app
        self.url = url
        conf = app.conf
        self.serializer = conf.result_serializer
        self.accept = prepare_accept_content(conf.result_accept_content or conf.accept_content)
        self.expires = conf.result_expires
        self.namespace = conf.result_namespace

    # encoding ---------------------------------------------------------------
    def encode(self, value: Any) -> bytes | str:
        _, _, payload = dumps(value, serializer=self.serializer)
        return payload

    def decode(self, payload: bytes | str) -> Any:
        content_type = {"json": "application/json", "pickle": "application/x-python-serialize",
                        "msgpack": "application/x-msgpack", "yaml": "application/x-yaml"}.get(
            self.serializer, self.serializer)
        return loads(payload, content_type, "utf-8", accept=self.accept)

    def prepare_exception(self, exc: BaseException) -> dict[str, Any]:
        cls = type(exc)
        module = cls.__module__
        if module == "greenq.exceptions" and cls.__name__ in gexc.CELERY_EQUIVALENTS:
            module = gexc.CELERY_EQUIVALENTS[cls.__name__]
        return {"exc_type": cls.__qualname__, "exc_message": list(_serializable(exc.args)),
                "exc_module": module}

    def exception_to_python(self, data: Any) -> BaseException:
        """Rebuild an exception; the same class when the reading process has it."""
        if isinstance(data, BaseException):
            return data
        if not isinstance(data, dict) or "exc_type" not in data:
            return Exception(data)
        exc_type, module, message = data["exc_type"], data.get("exc_module"), data.get("exc_message", ())
        cls = _find_exception_class(exc_type, module)
        args = message if isinstance(message, (list, tuple)) else [message]
        try:
            return cls(*args)
        except Exception:  # a class whose __init__ wants other arguments
            exc = cls.__new__(cls)
            exc.args = tuple(args)
            return exc

    # meta -------------------------------------------------------------------
    def make_meta(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                  request: Any = None) -> dict[str, Any]:
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = self.prepare_exception(result)
        meta = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": [],
            "date_done": datetime.now(timezone.utc).isoformat() if state in states.READY_STATES else None,
            "task_id": task_id,
        }
        if request is not None:
            if getattr(request, "group", None):
                meta["group_id"] = request.group
            if getattr(request, "parent_id", None):
                meta["parent_id"] = request.parent_id
            if self.app.conf.result_extended:
                meta.update(name=request.name, args=request.args, kwargs=request.kwargs,
                            worker=request.hostname, retries=request.retries,
                            queue=request.delivery_info.get("routing_key"))
        return meta

    def key_for(self, task_id: str) -> str:
        return f"{self.namespace}-task-meta-{task_id}"

    # the contract -----------------------------------------------------------
    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: Any = None) -> dict[str, Any]:
        """Store ``state`` for ``task_id`` (never replacing a stored SUCCESS)."""
        meta = self.make_meta(task_id, result, state, traceback, request)
        self._store(task_id, meta, state)
        return meta

    def mark_as_started(self, task_id: str, request: Any = None, **info: Any) -> None:
        self.store_result(task_id, info, states.STARTED, request=request)

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(self, task_id: str, exc: BaseException, traceback: str | None = None,
                        request: Any = None) -> None:
        self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_retry(self, task_id: str, exc: BaseException, traceback: str | None = None,
                      request: Any = None) -> None:
        self.store_result(task_id, exc, states.RETRY, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> None:
        self.store_result(task_id, gexc.TaskRevokedError(reason), states.REVOKED, request=request)

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        meta = self._get(task_id)
        return meta if meta is not None else pending_meta(task_id)

    def forget(self, task_id: str) -> None:
        self._forget(task_id)

    def wait_for(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until ``task_id`` is ready; returns its meta.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        for _, meta in self.wait_for_many([task_id], timeout=timeout):
            return meta
        raise TimeoutError(f"task {task_id} not ready after {timeout}s")

    def wait_for_many(self, task_ids: Iterable[str], timeout: float | None = None,
                      interval: float = 0.005) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(task_id, meta)`` as each becomes ready; polls with backoff.

        Raises:
            TimeoutError: some were not ready within ``timeout`` seconds.
        """
        waiting = list(dict.fromkeys(task_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        while waiting:
            still = []
            for task_id, meta in zip(waiting, self.get_many_meta(waiting)):
                if meta["status"] in states.READY_STATES:
                    yield task_id, meta
                else:
                    still.append(task_id)
            waiting = still
            if not waiting:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{len(waiting)} result(s) not ready after {timeout}s, e.g. {waiting[0]}")
            pause = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0))
            time.sleep(pause)
            delay = min(delay * 1.5, 0.2)

    def get_many_meta(self, task_ids: list[str]) -> list[dict[str, Any]]:
        return [self.get_task_meta(task_id) for task_id in task_ids]

    def cleanup(self) -> int:
        """Delete expired results where the store does not expire them itself."""
        return 0

    def close(self) -> None:
        """Release connections (called at worker shutdown and by tests)."""

    # storage primitives -----------------------------------------------------
    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        raise NotImplementedError

    def _get(self, task_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _forget(self, task_id: str) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        from greenq.config import mask_url
        return f"<{type(self).__name__} {mask_url(self.url)}>"


class GroupCommit:
    """Write items submitted from many threads/green threads in shared batches.

    ``submit(item)`` returns once ``write_many`` has written a batch that
    contained ``item`` (or raises what it raised).  The first caller to find
    no write in progress becomes the writer and keeps writing until nothing
    is queued; everyone else waits.  Under gevent the writer's network wait
    is when the others queue up, so batches form on their own.  Locks and
    events are created lazily, after any monkey-patching.
    """

    def __init__(self, write_many: Any) -> None:
        self.write_many = write_many
        self._lock: Any = None
        self._queued: list[tuple[Any, Any, list[BaseException]]] = []
        self._writing = False

    def submit(self, item: Any) -> None:
        import threading
        if self._lock is None:
            self._lock = threading.Lock()
        done = threading.Event()
        error: list[BaseException] = []
        with self._lock:
            self._queued.append((item, done, error))
            leader = not self._writing
            if leader:
                self._writing = True
        if leader:
            self._write_until_empty()
        else:
            done.wait()
        if error:
            raise error[0]

    def _write_until_empty(self) -> None:
        batch: list[tuple[Any, Any, list[BaseException]]] = []
        try:
            while True:
                with self._lock:
                    batch, self._queued = self._queued, []
                    if not batch:
                        self._writing = False
                        return
                try:
                    self.write_many([item for item, _, _ in batch])
                except Exception as exc:  # every waiter gets the writer's error
                    for _, _, error in batch:
                        error.append(exc)
                for _, done, _ in batch:
                    done.set()
                batch = []
        except BaseException as exc:
            # The writer itself was interrupted (killed, shut down): fail what
            # it held and what is queued, and give up the writer role, so no
            # other caller waits for ever.
            with self._lock:
                stranded, self._queued = batch + self._queued, []
                self._writing = False
            for _, done, error in stranded:
                error.append(exc)
                done.set()
            raise


class DisabledBackend(Backend):
    """No result store: storing is a no-op, reading says how to configure one."""

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        pass

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendError(
            "no result backend is configured, so results cannot be read: set "
            "result_backend (e.g. App(backend='redis://127.0.0.1:6379/1')) or the "
            "GREENQ_RESULT_BACKEND environment variable")

    _get = _forget = wait_for = wait_for_many = get_task_meta = _fail  # type: ignore[assignment]


def _serializable(args: Iterable[Any]) -> Iterator[Any]:
    for arg in args:
        if arg is None or isinstance(arg, (str, int, float, bool)):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield list(_serializable(arg))
        elif isinstance(arg, dict):
            yield {str(k): v for k, v in zip(arg, _serializable(arg.values()))}
        else:
            yield repr(arg)


_GREENQ_NAMES = {(module, name) for name, module in gexc.CELERY_EQUIVALENTS.items()}


def _find_exception_class(exc_type: str, module: str | None) -> type[BaseException]:
    if (module, exc_type) in _GREENQ_NAMES or module == "greenq.exceptions":
        cls = getattr(gexc, exc_type, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls
    target: Any = None
    if module in (None, "builtins", "exceptions"):
        target = builtins
    elif module in sys.modules:
        target = sys.modules[module]
    elif module and module.split(".")[0] in sys.modules:
        # Import a submodule only of a package this process already uses, so a
        # stored result can never make a client import unrelated code.
        try:
            target = importlib.import_module(module)
        except Exception:
            target = None
    cls = target
    for part in exc_type.split("."):
        cls = getattr(cls, part, None) if cls is not None else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    # Fall back to a class of the same name, so str(exc) and the name still read right.
    return type(exc_type.split(".")[-1], (Exception,), {"__module__": module or "builtins"})
