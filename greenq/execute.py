"""What runs inside a pool slot: one task call, start to finish.

:meth:`Tracer.run` calls the task under its time limits, stores the result,
sends the signals, handles retries (explicit and ``autoretry_for``), applies
callbacks and chains, and returns an :class:`Outcome`.  It never touches the
consuming channel: the worker's control loop acts on the outcome (ack,
reject, requeue).  The same tracer runs eager calls (:meth:`Task.apply`).
"""
from __future__ import annotations

import logging
import os
import time
import traceback as tb_module
import uuid
from typing import TYPE_CHECKING, Any, Callable

from greenq import signals, states
from greenq.exceptions import (
    HardTimeLimit,
    Ignore,
    Reject,
    Retry,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
)
from greenq.protocol import Request, saferepr
from greenq.task import reset_current_request, set_current_request

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.pools.base import BasePool
    from greenq.result import EagerResult
    from greenq.task import Task

logger = logging.getLogger("greenq.worker")

ACK, REJECT, REQUEUE = "ack", "reject", "requeue"
IGNORED = "IGNORED"


class Outcome:
    """What happened to one request, for the control loop and for events."""

    __slots__ = ("request", "state", "action", "retval", "exc", "traceback", "runtime")

    def __init__(self, request: Request, state: str, action: str, retval: Any = None,
                 exc: BaseException | None = None, traceback: str | None = None, runtime: float = 0.0) -> None:
        self.request = request
        self.state = state
        self.action = action
        self.retval = retval
        self.exc = exc
        self.traceback = traceback
        self.runtime = runtime

    def __repr__(self) -> str:
        return f"<Outcome {self.request.name}[{self.request.id}] {self.state} -> {self.action}>"


class Tracer:
    """Runs requests for one worker (or for eager calls when ``pool`` is None).

    Args:
        emit: ``emit(event_type, request, **fields)`` for task events, or None.
        time_limit, soft_time_limit: worker defaults (``--time-limit``).
    """

    def __init__(self, app: "App", pool: "BasePool | None" = None, hostname: str | None = None,
                 emit: Callable[..., None] | None = None,
                 time_limit: float | None = None, soft_time_limit: float | None = None) -> None:
        self.app = app
        self.pool = pool
        self.hostname = hostname
        self.emit = emit
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit

    def limits_for(self, request: Request, task: "Task") -> tuple[float | None, float | None]:
        """(soft, hard): the message's headers win, then the task, then the worker."""
        hard = request.time_limit or task.time_limit or self.time_limit
        soft = request.soft_time_limit or task.soft_time_limit or self.soft_time_limit
        if soft and hard and soft >= hard:
            soft = None  # a soft limit after the hard one could never fire
        return soft, hard

    def _event(self, kind: str, request: Request, **fields: Any) -> None:
        if self.emit is not None:
            self.emit(kind, request, **fields)

    def _call(self, task: "Task", request: Request) -> Any:
        soft, hard = self.limits_for(request, task) if self.pool is not None else (None, None)
        try:
            task.before_start(request.id, request.args, request.kwargs)
            if soft or hard:
                with self.pool.time_limits(soft, hard):  # type: ignore[union-attr]
                    return task(*request.args, **request.kwargs)
            return task(*request.args, **request.kwargs)
        except (Retry, Ignore, Reject):
            raise
        except Exception as exc:
            if task.autoretry_for and isinstance(exc, task.autoretry_for) \
                    and not isinstance(exc, task.dont_autoretry_for or ()):
                options = dict(task.retry_kwargs)
                if task.retry_backoff and "countdown" not in options:
                    options["countdown"] = task.backoff_countdown(request.retries)
                task.retry(exc=exc, **options)
            raise

    def run(self, request: Request) -> Outcome:
        task = request.task
        app = self.app
        started = time.monotonic()
        request.worker_pid = os.getpid()
        token = set_current_request(request)
        store = not request.is_eager or app.conf.task_store_eager_result
        ignore_result = bool(request.ignore_result or task.ignore_result)
        signals.task_prerun.send(sender=task, task_id=request.id, task=task,
                                 args=request.args, kwargs=request.kwargs)
        self._event("task-started", request)
        outcome: Outcome
        try:
            if task.track_started and store and not ignore_result:
                app.backend.mark_as_started(request.id, request, pid=os.getpid(), hostname=self.hostname)
            try:
                retval = self._call(task, request)
            except Retry as exc:
                outcome = self.on_retry(task, request, exc, store)
            except Ignore:
                outcome = Outcome(request, IGNORED, ACK)
            except Reject as exc:
                logger.info("task %s[%s] rejected itself (requeue=%s): %r",
                            request.name, request.id, exc.requeue, exc.reason)
                signals.task_rejected.send(sender=task, message=request.message, exc=exc)
                outcome = Outcome(request, states.REJECTED, REQUEUE if exc.requeue else REJECT, exc=exc)
            except Terminated:
                outcome = self.on_terminated(task, request, store)
            except HardTimeLimit as exc:
                limit = exc.args[0] if exc.args else self.limits_for(request, task)[1]
                logger.error("task %s[%s] hit its hard time limit (%ss) and was stopped",
                             request.name, request.id, limit)
                outcome = self.on_failure(task, request, TimeLimitExceeded(limit), None, store, ignore_result,
                                          timed_out=True)
            except BaseException as exc:  # a task must never take its slot (or the worker) down
                if not isinstance(exc, Exception):
                    logger.warning("task %s[%s] raised %s; treated as a failure",
                                   request.name, request.id, type(exc).__name__)
                outcome = self.on_failure(task, request, exc, tb_module.format_exc(), store, ignore_result)
            else:
                outcome = self.on_success(task, request, retval, store, ignore_result)
        except BaseException as exc:  # storing or a hook failed: report it, keep the slot alive
            logger.exception("task %s[%s]: internal error after the task ran", request.name, request.id)
            outcome = Outcome(request, states.FAILURE, ACK, exc=exc, traceback=tb_module.format_exc())
        finally:
            reset_current_request(token)
        outcome.runtime = time.monotonic() - started
        if outcome.state == states.SUCCESS and not request.is_eager and logger.isEnabledFor(logging.INFO):
            logger.info("task %s[%s] succeeded in %.3fs: %s", request.name, request.id, outcome.runtime,
                        saferepr(outcome.retval, 200))
        if self.emit is not None:
            self.emit_outcome(outcome)
        try:
            task.after_return(outcome.state, outcome.retval if outcome.exc is None else outcome.exc,
                              request.id, request.args, request.kwargs, outcome.traceback)
        except Exception:
            logger.exception("task %s[%s]: after_return raised", request.name, request.id)
        signals.task_postrun.send(sender=task, task_id=request.id, task=task, args=request.args,
                                  kwargs=request.kwargs, retval=outcome.retval, state=outcome.state)
        return outcome

    def emit_outcome(self, outcome: Outcome) -> None:
        request, state = outcome.request, outcome.state
        if state == states.SUCCESS:
            self._event("task-succeeded", request, result=saferepr(outcome.retval), runtime=outcome.runtime)
        elif state == states.FAILURE:
            self._event("task-failed", request, exception=repr(outcome.exc), traceback=outcome.traceback)
        elif state == states.RETRY:
            reason = getattr(outcome.exc, "exc", None) or outcome.exc
            self._event("task-retried", request, exception=repr(reason), traceback=outcome.traceback)
        elif state == states.REVOKED:
            self._event("task-revoked", request, terminated=True, signum=None, expired=False)

    # outcomes ------------------------------------------------------------------------
    def on_success(self, task: "Task", request: Request, retval: Any, store: bool, ignore_result: bool) -> Outcome:
        if store and not ignore_result:
            self.app.backend.mark_as_done(request.id, retval, request=request)
        try:
            task.on_success(retval, request.id, request.args, request.kwargs)
        except Exception:
            logger.exception("task %s[%s]: on_success raised", request.name, request.id)
        signals.task_success.send(sender=task, result=retval)
        outcome = Outcome(request, states.SUCCESS, ACK, retval=retval)
        self.apply_callbacks(request, retval)
        return outcome

    def on_failure(self, task: "Task", request: Request, exc: BaseException, traceback: str | None,
                   store: bool, ignore_result: bool, timed_out: bool = False) -> Outcome:
        if traceback is None:
            traceback = "".join(tb_module.format_exception_only(type(exc), exc))
        if not request.is_eager:
            logger.error("task %s[%s] raised %r\n%s", request.name, request.id, exc, traceback)
        if store and (not ignore_result or task.store_errors_even_if_ignored):
            self.app.backend.mark_as_failure(request.id, exc, traceback, request=request)
        try:
            task.on_failure(exc, request.id, request.args, request.kwargs, traceback)
        except Exception:
            logger.exception("task %s[%s]: on_failure raised", request.name, request.id)
        signals.task_failure.send(sender=task, task_id=request.id, exception=exc, args=request.args,
                                  kwargs=request.kwargs, traceback=traceback, einfo=traceback)
        self.apply_errbacks(request, exc, traceback)
        action = ACK
        if request.acks_late and not self.app.conf.task_acks_on_failure_or_timeout:
            action = REJECT
        return Outcome(request, states.FAILURE, action, exc=exc, traceback=traceback)

    def on_retry(self, task: "Task", request: Request, exc: Retry, store: bool) -> Outcome:
        reason = exc.exc if exc.exc is not None else exc
        traceback = "".join(tb_module.format_exception(reason)) if exc.exc is not None else None
        if not request.is_eager:
            logger.info("task %s[%s] retry %s: %s", request.name, request.id, exc.humanize(), reason)
        if store:
            self.app.backend.mark_as_retry(request.id, reason, traceback, request=request)
        try:
            task.on_retry(reason, request.id, request.args, request.kwargs, traceback or "")
        except Exception:
            logger.exception("task %s[%s]: on_retry raised", request.name, request.id)
        signals.task_retry.send(sender=task, request=request, reason=reason, einfo=traceback)
        return Outcome(request, states.RETRY, ACK, exc=exc, traceback=traceback)

    def on_terminated(self, task: "Task", request: Request, store: bool) -> Outcome:
        logger.warning("task %s[%s] terminated by revoke", request.name, request.id)
        exc = TaskRevokedError("terminated")
        if store:
            self.app.backend.mark_as_revoked(request.id, "terminated", request=request)
        signals.task_revoked.send(sender=task, request=request, terminated=True, signum=None, expired=False)
        return Outcome(request, states.REVOKED, ACK, exc=exc)

    # canvas ----------------------------------------------------------------------------
    def apply_callbacks(self, request: Request, retval: Any) -> None:
        from greenq.canvas import Signature
        ids: dict[str, Any] = {"parent_id": request.id, "root_id": request.root_id or request.id}
        try:
            for callback in request.callbacks or ():
                sig = Signature(callback, app=self.app)
                if request.is_eager:
                    self.app.tasks[sig.name].apply((retval, *sig.args) if not sig.immutable else sig.args,
                                                   sig.kwargs)
                else:
                    sig.apply_async((retval,), **ids)
            if request.chain:
                remaining = list(request.chain)
                following = Signature(remaining.pop(), app=self.app)
                following.apply_async((retval,), chain=remaining or None, **ids)
        except Exception:
            logger.exception("task %s[%s]: could not apply its callbacks", request.name, request.id)

    def apply_errbacks(self, request: Request, exc: BaseException, traceback: str | None) -> None:
        from greenq.canvas import Signature
        for errback in request.errbacks or ():
            try:
                sig = Signature(errback, app=self.app)
                local = self.app.tasks.get(sig.name)
                if local is not None and _accepts_three(local):
                    local(request, exc, traceback)  # new-style errback, run here as Celery does
                else:
                    sig.apply_async((request.id,), parent_id=request.id, root_id=request.root_id or request.id)
            except Exception:
                logger.exception("task %s[%s]: errback %r failed", request.name, request.id, errback)


def _accepts_three(task: "Task") -> bool:
    sig = task._signature
    if sig is None:
        return False
    try:
        sig.bind(None, None, None)
        return True
    except TypeError:
        return False


def apply_eagerly(task: "Task", args: tuple, kwargs: dict, *, task_id: str | None, retries: int,
                  throw: bool | None, link: Any, link_error: Any) -> "EagerResult":
    """Run ``task`` in this process, retries included; returns an EagerResult."""
    from greenq.app import _signature_list
    from greenq.result import EagerResult

    app = task.app
    task_id = task_id or str(uuid.uuid4())
    tracer = Tracer(app)
    while True:
        request = Request(id=task_id, name=task.name, args=list(args), kwargs=kwargs, retries=retries,
                          is_eager=True, root_id=task_id, task=task, callbacks=_signature_list(link),
                          errbacks=_signature_list(link_error), delivery_info={"is_eager": True},
                          hostname="eager")
        outcome = tracer.run(request)
        if outcome.state != states.RETRY:
            break
        retries += 1
    throw = app.conf.task_eager_propagates if throw is None else throw
    if throw and outcome.state == states.FAILURE and outcome.exc is not None:
        raise outcome.exc
    value = outcome.exc if outcome.state in states.EXCEPTION_STATES else outcome.retval
    return EagerResult(task_id, value, outcome.state, outcome.traceback, app=app, name=task.name)
