"""Signatures, chains and groups, in Celery's wire shape.

A :class:`Signature` is a dict ``{"task", "args", "kwargs", "options",
"subtask_type", "immutable"}``, so it travels in a message's ``callbacks``,
``errbacks`` and ``chain`` fields exactly as Celery's do.  ``chain`` is
sent reversed, as Celery sends it: the worker pops the last element.
"""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.result import AsyncResult, GroupResult


class Signature(dict):
    """A task call to make later: name, arguments and options."""

    def __init__(self, task: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: "App | None" = None) -> None:
        if isinstance(task, Mapping):
            data = dict(task)
            super().__init__(task=data["task"], args=list(data.get("args") or ()), kwargs=dict(data.get("kwargs") or {}),
                             options=dict(data.get("options") or {}), subtask_type=data.get("subtask_type"),
                             immutable=bool(data.get("immutable", False)))
        else:
            name = task if isinstance(task, str) else task.name
            app = app or getattr(task, "app", None)
            super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}), options=dict(options or {}),
                             subtask_type=subtask_type, immutable=immutable)
        self._app = app

    @property
    def app(self) -> "App":
        if self._app is None:
            from greenq.app import current_app
            self._app = current_app()
        return self._app

    name = property(lambda self: self["task"])
    args = property(lambda self: tuple(self["args"]))
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    immutable = property(lambda self: self["immutable"])

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> "Signature":
        """A copy with partial arguments applied (unless immutable) and options merged."""
        if self.immutable:
            args, kwargs = (), {}
        return Signature(self["task"], (*args, *self["args"]), {**self["kwargs"], **(kwargs or {})},
                         {**self["options"], **options}, self["subtask_type"], self.immutable, self._app)

    def set(self, **options: Any) -> "Signature":
        self["options"].update(options)
        return self

    def link(self, callback: "Signature") -> "Signature":
        self["options"].setdefault("link", []).append(dict(callback))
        return callback

    def link_error(self, errback: "Signature") -> "Signature":
        self["options"].setdefault("link_error", []).append(dict(errback))
        return errback

    def apply_async(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> "AsyncResult":
        sig = self.clone(args, kwargs, **options)
        task = self.app.tasks.get(sig.name)
        if task is not None:
            return task.apply_async(sig.args, sig.kwargs, **sig.options)
        return self.app.send_task(sig.name, sig.args, sig.kwargs, **sig.options)

    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        return self.apply_async(args, kwargs)

    def __or__(self, other: "Signature") -> "chain":  # type: ignore[override]  # Celery's chain operator
        return chain(self, other)

    def __repr__(self) -> str:
        args = ", ".join([*(repr(a) for a in self["args"]), *(f"{k}={v!r}" for k, v in self["kwargs"].items())])
        return f"{self['task']}({args}){'!' if self.immutable else ''}"


def signature(task: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Signature:
    """Build a :class:`Signature` from a task, a name or a signature dict."""
    if isinstance(task, Signature):
        return task
    return Signature(task, args, kwargs, options)


class chain:  # noqa: N801 - Celery's name
    """Run signatures one after another, each getting the previous result."""

    def __init__(self, *tasks: Signature | Iterable[Signature]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])  # type: ignore[arg-type]
        self.tasks = [signature(t) for t in tasks]
        if not self.tasks:
            raise ValueError("chain needs at least one signature")

    def __or__(self, other: Signature) -> "chain":
        return chain(*self.tasks, other)

    def apply_async(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> "AsyncResult":
        first, rest = self.tasks[0], self.tasks[1:]
        remaining = [dict(sig) for sig in reversed(rest)] or None
        return first.apply_async(args, kwargs, chain=remaining, **options)

    def delay(self, *args: Any, **kwargs: Any) -> "AsyncResult":
        return self.apply_async(args, kwargs)


class group:  # noqa: N801 - Celery's name
    """Run signatures in parallel; the result is a :class:`GroupResult`."""

    def __init__(self, *tasks: Signature | Iterable[Signature]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])  # type: ignore[arg-type]
        self.tasks = [signature(t) for t in tasks]

    def apply_async(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> "GroupResult":
        from greenq.result import GroupResult
        group_id = options.pop("group_id", None) or str(uuid.uuid4())
        results = [sig.apply_async(args, kwargs, group_id=group_id, group_index=index, **options)
                   for index, sig in enumerate(self.tasks)]
        app = self.tasks[0].app if self.tasks else None
        return GroupResult(group_id, results, app=app)

    def delay(self, *args: Any, **kwargs: Any) -> "GroupResult":
        return self.apply_async(args, kwargs)
