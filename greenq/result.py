"""Reading results: :class:`AsyncResult`, :class:`ResultSet`, :class:`GroupResult`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from greenq import states
from greenq.exceptions import TaskRevokedError

if TYPE_CHECKING:
    from greenq.app import App


def _app(app: "App | None") -> "App":
    if app is not None:
        return app
    from greenq.app import current_app
    return current_app()


class AsyncResult:
    """The result of a task sent to a worker, read from the result backend.

    Once a ready state (SUCCESS, FAILURE, REVOKED) has been read it is cached.
    """

    def __init__(self, id: str, app: "App | None" = None, name: str | None = None) -> None:  # noqa: A002
        self.id = id
        self.app = _app(app)
        self.name = name
        self._cache: dict[str, Any] | None = None

    task_id = property(lambda self: self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def backend(self) -> Any:
        return self.app.backend

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    def _set_meta(self, meta: dict[str, Any]) -> None:
        if meta["status"] in states.READY_STATES:
            self._cache = meta

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED (or a custom state)."""
        return self._get_meta()["status"]

    status = state

    def _decode(self, meta: dict[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return self.backend.exception_to_python(meta["result"])
        return meta["result"]

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE/RETRY/REVOKED."""
        return self._decode(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> str | None:
        return self._get_meta().get("date_done")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.005,
            disable_sync_subtasks: bool = False) -> Any:
        """Wait for the task and return its value.

        Args:
            timeout: seconds to wait; None waits for ever.
            propagate: re-raise the task's exception (FAILURE), or
                :class:`TaskRevokedError` (REVOKED).

        Raises:
            greenq.exceptions.TimeoutError: not ready within ``timeout``.
        """
        meta = self._cache or self.backend.wait_for(self.id, timeout=timeout)
        self._set_meta(meta)
        return self._maybe_raise(meta, propagate)

    wait = get

    def _maybe_raise(self, meta: dict[str, Any], propagate: bool) -> Any:
        value = self._decode(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            if meta["status"] == states.REVOKED and not isinstance(value, TaskRevokedError):
                value = TaskRevokedError(f"task {self.id} was revoked")
            raise value
        return value

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM", **kwargs: Any) -> Any:
        """Ask every worker to skip (or, with ``terminate``, stop) this task."""
        return self.app.control.revoke(  # type: ignore[attr-defined]  # app.control: greenq/control.py
            self.id, terminate=terminate, signal=signal, **kwargs)

    def as_tuple(self) -> tuple:
        return (self.id, None), None


class EagerResult(AsyncResult):
    """The result of :meth:`Task.apply`: already known, nothing to wait for."""

    def __init__(self, id: str, value: Any, state: str, traceback: str | None = None,  # noqa: A002
                 app: "App | None" = None, name: str | None = None) -> None:
        super().__init__(id, app=app, name=name)
        self._value = value
        self._state = state
        self._traceback = traceback

    def _get_meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._value, "traceback": self._traceback,
                "task_id": self.id, "children": [], "date_done": None}

    def _decode(self, meta: dict[str, Any]) -> Any:
        return meta["result"]

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.005,
            disable_sync_subtasks: bool = False) -> Any:
        return self._maybe_raise(self._get_meta(), propagate)

    def forget(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id} {self._state}>"


class ResultSet:
    """Several results, read together."""

    def __init__(self, results: list[AsyncResult], app: "App | None" = None) -> None:
        self.results = list(results)
        self.app = _app(app if app is not None else (self.results[0].app if self.results else None))

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def iter_ready(self, timeout: float | None = None) -> Iterator[AsyncResult]:
        """Yield each result as it becomes ready (one wait for all of them)."""
        by_id: dict[str, list[AsyncResult]] = {}
        for r in self.results:
            by_id.setdefault(r.id, []).append(r)
        pending = [r.id for r in self.results if r._cache is None]
        for r in self.results:
            if r._cache is not None:
                yield r
        for task_id, meta in self.app.backend.wait_for_many(pending, timeout=timeout):
            for r in by_id[task_id]:
                r._set_meta(meta)
                yield r

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Wait for all and return their values in order."""
        for _ in self.iter_ready(timeout=timeout):
            pass
        return [r.get(propagate=propagate) for r in self.results]

    get = join

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def revoke(self, terminate: bool = False, **kwargs: Any) -> Any:
        return self.app.control.revoke(  # type: ignore[attr-defined]  # app.control: greenq/control.py
            [r.id for r in self.results], terminate=terminate, **kwargs)


class GroupResult(ResultSet):
    """The results of a :func:`greenq.group`."""

    def __init__(self, id: str, results: list[AsyncResult], app: "App | None" = None) -> None:  # noqa: A002
        super().__init__(results, app=app)
        self.id = id

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"
