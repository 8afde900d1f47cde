"""Every error greenq raises, under one root: :class:`GreenqError`.

Control-flow exceptions (:class:`Retry`, :class:`Reject`, :class:`Ignore`) are
raised by task code on purpose and handled by the worker.  The interrupts a
worker injects into running tasks to stop them (:class:`HardTimeLimit`,
:class:`Terminated`) derive from ``BaseException`` so that a task's
``except Exception:`` cannot swallow them; they are turned into ordinary
errors (:class:`TimeLimitExceeded`, :class:`TaskRevokedError`) when stored.
"""
from __future__ import annotations

import builtins
from typing import Any


class GreenqError(Exception):
    """Root of every error greenq raises on purpose."""


class ConfigurationError(GreenqError, ValueError):
    """Raised when a setting, a task option or a CLI argument is invalid.

    The message says which name was wrong and what would be accepted.
    """


class PatchError(ConfigurationError):
    """Raised when a green pool cannot start because the process was
    monkey-patched too late (or with the other green library)."""


class QueueNotFound(ConfigurationError):
    """Raised when a task is sent (or a worker told to consume) a queue that
    is not in ``task_queues`` while ``task_create_missing_queues`` is off."""


class NotRegistered(GreenqError, KeyError):
    """Raised (and stored as the task's failure) when a task name is unknown."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ContentDisallowed(GreenqError):
    """Raised when a message uses a serializer the app does not accept."""


class InvalidMessage(GreenqError):
    """Raised when a message cannot be decoded as a Celery protocol v2 task."""


class MessageTooLarge(GreenqError):
    """Raised when a task message is larger than ``task_message_max_size``."""


class TimeoutError(GreenqError, builtins.TimeoutError):  # noqa: A001 - deliberate name
    """Raised by ``AsyncResult.get(timeout=...)`` when the result is not ready."""


class BackendError(GreenqError):
    """Raised when the result backend cannot be used (not configured, down)."""


class PoolError(GreenqError):
    """Raised when a pool cannot be created or a connection pool is exhausted."""


class Retry(GreenqError):
    """Raised by :meth:`Task.retry` after the retry has been published.

    The worker records state RETRY and does not store a failure.
    """

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: Any = None, **kwargs: Any) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message, exc, when)

    def humanize(self) -> str:
        when = self.when
        if isinstance(when, (int, float)):
            return f"in {when:.1f}s"
        return f"at {when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> tuple:
        return self.__class__, (self.message, self.exc, self.when)


class Reject(GreenqError):
    """Raised by task code to reject its message (``requeue`` to put it back)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(GreenqError):
    """Raised by task code to stop without storing any state."""


class MaxRetriesExceededError(GreenqError):
    """Raised by :meth:`Task.retry` when ``max_retries`` is reached and no
    original exception was given."""


class SoftTimeLimitExceeded(GreenqError):
    """Raised inside a task when its soft time limit expires.

    Task code may catch it to clean up; the hard limit still applies.
    """


class TimeLimitExceeded(GreenqError):
    """Stored as the failure of a task that ran past its hard time limit."""


class TaskRevokedError(GreenqError):
    """Stored for, and raised by ``get()`` on, a revoked task."""


class WorkerLostError(GreenqError):
    """Stored when the process running a task died before it finished."""


class HardTimeLimit(BaseException):
    """Interrupt raised inside a task at its hard time limit.

    A BaseException so that ``except Exception`` in task code cannot swallow
    it; the worker converts it into :class:`TimeLimitExceeded`.
    """


class Terminated(BaseException):
    """Interrupt raised inside a task revoked with ``terminate=True``.

    A BaseException for the same reason as :class:`HardTimeLimit`.
    """


# Names Celery uses for the same ideas.  When a result is stored we write the
# Celery name so that stock Celery clients re-raise their own class, and we map
# Celery's names back to ours when reading.
CELERY_EQUIVALENTS = {
    "SoftTimeLimitExceeded": "billiard.exceptions",
    "TimeLimitExceeded": "billiard.exceptions",
    "TaskRevokedError": "celery.exceptions",
    "MaxRetriesExceededError": "celery.exceptions",
    "NotRegistered": "celery.exceptions",
    "WorkerLostError": "billiard.exceptions",
    "Retry": "celery.exceptions",
    "Reject": "celery.exceptions",
    "Ignore": "celery.exceptions",
}
