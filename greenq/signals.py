"""Signals: greenq's one extension mechanism.

Receivers are plain callables ``receiver(sender=..., **kwargs)``.  A receiver
that raises is logged with its traceback and never stops the sender::

    from greenq import signals

    @signals.task_failure.connect
    def alert(sender=None, task_id=None, exception=None, **kwargs):
        ...

``connect(sender=...)`` limits a receiver to one sender (a task name, a task
object or a worker hostname, compared by equality or by the sender's name).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named hook that calls every connected receiver in order."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self._receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None) -> Any:
        """Connect ``receiver``; usable as ``@sig.connect`` or ``@sig.connect(sender=x)``."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender)
        if not callable(receiver):
            raise TypeError(f"signal {self.name}: receiver must be callable, got {receiver!r}")
        with self._lock:
            if not any(r is receiver and s == sender for r, s in self._receivers):
                self._receivers = [*self._receivers, (receiver, sender)]
        return receiver

    def disconnect(self, receiver: Receiver, *, sender: Any = None) -> bool:
        """Remove ``receiver``; returns whether it was connected."""
        with self._lock:
            before = len(self._receivers)
            self._receivers = [(r, s) for r, s in self._receivers
                               if not (r is receiver and (sender is None or s == sender))]
            return len(self._receivers) != before

    @property
    def receivers(self) -> list[Receiver]:
        return [r for r, _ in self._receivers]

    def send(self, sender: Any = None, **kwargs: Any) -> list[tuple[Receiver, Any]]:
        """Call the receivers; returns ``[(receiver, result_or_exception), ...]``."""
        receivers = self._receivers  # copy-on-write list: safe to iterate
        if not receivers:
            return []
        sender_name = getattr(sender, "name", sender)
        responses = []
        for receiver, wanted in receivers:
            if wanted is not None and wanted != sender and wanted != sender_name \
                    and getattr(wanted, "name", object()) != sender_name:
                continue
            try:
                responses.append((receiver, receiver(sender=sender, signal=self, **kwargs)))
            except Exception as exc:  # a receiver must never break the worker
                logger.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                responses.append((receiver, exc))
        return responses

    def __repr__(self) -> str:
        return f"<Signal {self.name}: {len(self._receivers)} receivers>"


before_task_publish = Signal("before_task_publish", ("body", "exchange", "routing_key", "headers", "properties", "declare"))
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key", "headers"))
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))
task_rejected = Signal("task_rejected", ("message", "exc"))
worker_init = Signal("worker_init", ("worker",))
worker_ready = Signal("worker_ready", ("worker",))
worker_shutdown = Signal("worker_shutdown", ("worker",))
worker_process_init = Signal("worker_process_init", ())
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
heartbeat_sent = Signal("heartbeat_sent", ())
