"""Child processes that run tasks: ``-P prefork`` and the CPU offload (``--cpu-pool``).

:class:`ProcessPool` keeps ``size`` children, started with the *spawn* (or
*forkserver*) method: a child is a fresh interpreter that imports the app,
never a fork of the worker, so no green thread, lock or connection of a
gevent-patched parent is carried into it.  The control loop submits a
request to an idle child; the child runs it with its own
:class:`~greenq.execute.Tracer` (signals, result storage, retries and
callbacks happen in the child, as in Celery's prefork pool) and sends back
a short report; the pool turns it into an :class:`~greenq.execute.Outcome`
for the loop, which acks.  The parent stores a result only when the child
cannot: the child died (``WorkerLostError``, or a requeue with
``acks_late`` + ``reject_on_worker_lost``), was killed at the hard time
limit (``TimeLimitExceeded``) or by ``revoke(terminate=True)``.

Limits: the soft time limit is raised inside the task by the child (an
alarm signal); at the hard limit the parent kills the child (SIGKILL), which
also stops code stuck in a C call, and starts a replacement.  After
``max_tasks_per_child`` tasks, or when a task leaves the child above
``max_memory_per_child`` KiB of resident memory, the child is retired after
that task and replaced.

The supervisor -- one loop that waits on every child's result pipe and exit
sentinel -- blocks only through :mod:`threading` and :mod:`select`.  In a
process patched by gevent or eventlet those are green, so the supervisor is
a green thread and waits cooperatively (the I/O green threads keep running);
in an unpatched worker (``-P prefork``) it is an OS thread.
"""
from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager

from greenq import states
from greenq.exceptions import (
    ConfigurationError,
    HardTimeLimit,
    PoolError,
    Terminated,
    TimeLimitExceeded,
    WorkerLostError,
)
from greenq.execute import REQUEUE, Outcome
from greenq.pools.base import BasePool, no_limits

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.execute import Tracer
    from greenq.protocol import Request

logger = logging.getLogger("greenq.worker")

START_METHODS = ("spawn", "forkserver")
BOOT_TIMEOUT = 60.0      # seconds the first children get to import the app
RESPAWN_BACKOFF_MAX = 10.0
POLL_MAX = 1.0           # seconds: the supervisor wakes at least this often

#: request fields that stay in the parent: the kombu message, the task object,
#: the slot handle and the connection bookkeeping
PARENT_ONLY_FIELDS = frozenset({"message", "task", "handle", "body", "generation", "acknowledged",
                                "content_type", "content_encoding", "delivery_info"})
DELIVERY_FIELDS = ("exchange", "routing_key", "priority", "redelivered")


class Shown:
    """A child's return value, known here by its repr (for logs and events)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


class ChildException(Exception):
    """An exception raised in a child process, known here by its repr."""

    def __init__(self, text: str, type_name: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.type_name = type_name

    def __repr__(self) -> str:
        return self.text


class Job:
    """One request running (or queued to run next) in a child; the handle for ``kill``."""

    __slots__ = ("id", "request", "tracer", "on_outcome", "pool", "child", "deadline", "hard",
                 "started_at", "reason")

    def __init__(self, job_id: int, request: "Request", tracer: "Tracer",
                 on_outcome: Callable[[Outcome], Any], pool: "ProcessPool") -> None:
        self.id = job_id
        self.request = request
        self.tracer = tracer
        self.on_outcome = on_outcome
        self.pool = pool
        self.child: Child | None = None
        self.deadline: float | None = None
        self.hard: float | None = None
        self.started_at: float | None = None  # None while queued behind another job
        self.reason: str | None = None  # why the parent ended it: "timeout", "terminated", "unsent"

    def start_clock(self, now: float) -> None:
        """The child begins this job now: its hard limit counts from here."""
        self.started_at = now
        self.deadline = now + self.hard if self.hard else None

    def kill(self, exc_type: type[BaseException] = Terminated) -> bool:
        """End this job's child (see :meth:`ProcessPool.kill`)."""
        return self.pool.kill(self, exc_type)

    def __repr__(self) -> str:
        return f"<Job {self.request.name}[{self.request.id}] in {self.child!r}>"


class Child:
    """A child process and the jobs sent to it: the first runs, the others wait in its pipe."""

    __slots__ = ("process", "tx", "rx", "pid", "ready", "jobs", "tasks", "retiring", "number")

    def __init__(self, process: Any, tx: Any, rx: Any, number: int) -> None:
        self.process = process
        self.tx = tx          # parent -> child: jobs, None to stop
        self.rx = rx          # child -> parent: ready, done, boot-error
        self.pid: int = process.pid
        self.ready = False
        self.jobs: collections.deque[Job] = collections.deque()
        self.tasks = 0
        self.retiring = False
        self.number = number

    @property
    def job(self) -> Job | None:
        """The job the child is running."""
        return self.jobs[0] if self.jobs else None

    def __repr__(self) -> str:
        return f"<child {self.number} pid {self.pid}>"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "an unknown status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class ProcessPool:
    """``size`` child processes running requests for one worker.

    Args:
        app: the worker's app; children import it by module (see
            :func:`app_reference`) and apply its configuration.
        size: number of children.
        takes: which requests this pool runs (default: all of them).
        max_tasks_per_child: retire a child after this many tasks.
        max_memory_per_child: retire a child whose resident memory is above
            this many KiB after a task.
        start_method: "spawn" (default) or "forkserver".
        time_limit, soft_time_limit: the worker's defaults, for tasks and
            messages that set none.
        name: for logs and process names ("prefork", "cpu").
        prefetch: requests sent ahead to a busy child, so that it starts the
            next one the moment it finishes instead of waiting for the parent
            to notice (default ``worker_process_prefetch``, 1; 0 sends work to
            idle children only).  A request waiting in a dead child's pipe
            never started: it is requeued.
        nice: added to the children's scheduling niceness (``os.nice``), so
            that on a busy machine the kernel runs the worker itself first
            (the CPU offload uses this to keep the I/O green threads prompt).
    """

    def __init__(self, app: "App", size: int, *, takes: Callable[["Request"], bool] | None = None,
                 max_tasks_per_child: int | None = None, max_memory_per_child: int | None = None,
                 start_method: str | None = None, time_limit: float | None = None,
                 soft_time_limit: float | None = None, name: str = "prefork", prefetch: int | None = None,
                 nice: int = 0, **ignored: Any) -> None:
        if size < 1:
            raise ConfigurationError(f"a process pool needs at least 1 process, got {size}")
        start_method = start_method or app.conf.worker_pool_start_method
        if start_method not in START_METHODS:
            raise ConfigurationError(
                f"process start method must be one of {', '.join(START_METHODS)}, got {start_method!r}: "
                "forking a worker that may be monkey-patched carries its green threads into the child")
        for option, value in (("max_tasks_per_child", max_tasks_per_child),
                              ("max_memory_per_child", max_memory_per_child)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{option} must be a whole number of at least 1, got {value!r}")
        self.app = app
        self.size = size
        self.name = name
        self._takes = takes
        self.max_tasks_per_child = max_tasks_per_child or app.conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or app.conf.worker_max_memory_per_child
        self.start_method = start_method
        self.depth = 1 + (app.conf.worker_process_prefetch if prefetch is None else prefetch)
        self.nice = nice
        self.time_limit = time_limit
        self.soft_time_limit = soft_time_limit
        self._context = multiprocessing.get_context(start_method)
        self._children: list[Child] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._numbers = itertools.count(1)
        self._job_ids = itertools.count(1)
        self._boot: dict[str, Any] | None = None
        self._boot_error: str | None = None
        self._respawn_failures = 0
        self._respawn_at = 0.0
        self._last_exit = "an unknown status"
        self._stopping = False
        self._closed = False
        self._supervisor: Any = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self.replaced = 0   # children replaced after a crash, a kill or a limit

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start the children and wait until they are ready to take work.

        Raises:
            PoolError: a child could not import the app (its traceback is in
                the message), or the children were not ready in ``timeout``.
        """
        from greenq.pools.child import boot_info
        self._boot = boot_info(self.app, self.time_limit, self.soft_time_limit, self.name, self.nice)
        if self.start_method == "forkserver":
            self._context.set_forkserver_preload(["greenq.pools.child", *self._boot["modules"]])
        self._supervisor = threading.Thread(target=self._supervise, name=f"greenq-{self.name}-supervisor",
                                            daemon=True)
        self._supervisor.start()
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._boot_error and sum(c.ready for c in self._children) < self.size:
                if self._respawn_failures >= 3 and not any(c.ready for c in self._children):
                    self._boot_error = (
                        f"{self._respawn_failures} child processes exited before they were ready "
                        f"(the last with {self._last_exit}). A child imports the worker's __main__ module "
                        "again when it starts: if you start the worker from a script, put that code under "
                        "`if __name__ == '__main__':`.")
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(remaining, 0.5))
            error, ready = self._boot_error, sum(c.ready for c in self._children)
        if error or ready < self.size:
            self.stop()
            if error:
                raise PoolError(f"the {self.name} pool's child processes could not start:\n{error}")
            raise PoolError(f"only {ready} of {self.size} {self.name} child processes were ready "
                            f"after {timeout:.0f}s")
        logger.info("%s pool: %d child processes ready (%s), pids %s", self.name, self.size,
                    self.start_method, ", ".join(str(c.pid) for c in self._children))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every child: idle ones are asked to exit, busy ones are killed.

        Outcomes of jobs still running are not delivered: by now the worker
        has requeued those requests.
        """
        with self._lock:
            if self._closed:
                return
            self._stopping = True
        self._wake()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(POLL_MAX + 1.0)   # it returns at the top of its loop
        with self._lock:
            children = list(self._children)
        for child in children:
            if child.jobs or not child.ready:
                _kill(child.pid, signal.SIGKILL)
            else:
                try:
                    child.tx.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for child in children:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.exitcode is None:
                _kill(child.pid, signal.SIGKILL)
                child.process.join(1.0)
            _close(child)
        with self._lock:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)

    # ------------------------------------------------------------------ the loop's side
    def takes(self, request: "Request") -> bool:
        """True when ``request`` should run in this pool."""
        return self._takes is None or self._takes(request)

    def _room(self, child: Child) -> int:
        """How many more jobs ``child`` may be sent now."""
        if not child.ready or child.retiring:
            return 0
        room = self.depth - len(child.jobs)
        if self.max_tasks_per_child:   # never send a child more than it will run before retiring
            room = min(room, self.max_tasks_per_child - child.tasks - len(child.jobs))
        return max(room, 0)

    def free_count(self) -> int:
        """Requests the children can take now (idle ones, plus one queued per busy one)."""
        return sum(self._room(c) for c in self._children)

    @property
    def active(self) -> int:
        """Requests sent to children and not finished."""
        return sum(len(c.jobs) for c in self._children)

    def submit(self, request: "Request", tracer: "Tracer", on_outcome: Callable[[Outcome], Any]) -> Job:
        """Send ``request`` to an idle child; ``on_outcome(outcome)`` is called when it is done.

        The caller checks :meth:`free_count` first.  ``tracer`` is the
        worker's: its limits apply, and it stores the failure when the child
        cannot.
        """
        job = Job(next(self._job_ids), request, tracer, on_outcome, self)
        soft, hard = tracer.limits_for(request, request.task)
        with self._lock:
            candidates = [c for c in self._children if self._room(c)]
            if not candidates:
                raise PoolError(f"no {self.name} child process can take a request: "
                                "check free_count() before submit()")
            child = min(candidates, key=lambda c: len(c.jobs))   # an idle child first
            child.jobs.append(job)
            job.child = child
            job.hard = hard
            if len(child.jobs) == 1:
                job.start_clock(time.monotonic())
        request.worker_pid = child.pid
        if tracer.emit is not None:
            tracer.emit("task-started", request)
        fields = {name: value for name, value in vars(request).items() if name not in PARENT_ONLY_FIELDS}
        fields["delivery_info"] = {k: request.delivery_info[k] for k in DELIVERY_FIELDS
                                   if k in request.delivery_info}
        try:
            child.tx.send((job.id, fields))
        except (OSError, ValueError, pickle.PicklingError) as exc:
            with self._lock:
                if not isinstance(exc, OSError):   # cannot be pickled: fail here and now
                    child.jobs.remove(job)
                    raise
                # the child is gone; the supervisor notices and requeues the job
                job.reason = "unsent"
            logger.debug("sending %r to %r failed: %r", request, child, exc)
        if job.deadline is not None:
            self._wake()  # the supervisor may be sleeping past this deadline
        return job

    def kill(self, job: Job, exc_type: type[BaseException] = Terminated) -> bool:
        """End ``job`` by killing its child; True if a signal was sent.

        ``Terminated`` (``revoke(terminate=True)``) stores REVOKED;
        ``HardTimeLimit`` stores ``TimeLimitExceeded``.  The child is replaced.
        """
        with self._lock:
            child = job.child
            if child is None or job not in child.jobs or job.reason is not None:
                return False
            job.reason = "timeout" if issubclass(exc_type, HardTimeLimit) else "terminated"
            if child.job is not job:
                return True   # queued: the child is killed when it reaches this job
        return _kill(child.pid, signal.SIGKILL)

    def join(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for every child to be idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.active:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining if remaining is None else min(remaining, 0.5))
        return True

    def grow(self, n: int) -> int:
        with self._lock:
            self.size += max(0, n)
        self._wake()
        return self.size

    def shrink(self, n: int) -> int:
        with self._lock:
            self.size = max(1, self.size - max(0, n))
            extra = len(self._live()) - self.size
            for child in sorted(self._live(), key=lambda c: len(c.jobs)):
                if extra <= 0:
                    break
                self._retire(child, "the pool shrank")
                extra -= 1
        return self.size

    def info(self) -> dict[str, Any]:
        return {
            "processes": [c.pid for c in self._children if not c.retiring],
            "max-concurrency": self.size,
            "start-method": self.start_method,
            "nice": self.nice,
            "max-tasks-per-child": self.max_tasks_per_child,
            "max-memory-per-child": self.max_memory_per_child,
            "replaced": self.replaced,
        }

    # ------------------------------------------------------------------ the supervisor
    def _live(self) -> list[Child]:
        return [c for c in self._children if not c.retiring]

    def _wake(self) -> None:
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a wakeup is already pending, or the pool is closed

    def _supervise(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    self._spawn_missing()
                    by_fd: dict[int, tuple[str, Child]] = {}
                    for child in self._children:
                        by_fd[child.rx.fileno()] = ("message", child)
                        by_fd[child.process.sentinel] = ("exit", child)
                    timeout = self._next_timeout()
                events = _wait_readable([self._wake_r, *by_fd], timeout)
                exited = []
                for fd in events:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    kind, child = by_fd[fd]
                    if kind == "message":
                        if not self._receive(child):
                            exited.append(child)
                    else:
                        exited.append(child)
                for child in dict.fromkeys(exited):
                    self._on_exit(child)
                self._enforce_deadlines()
        except Exception:  # the pool is useless without its supervisor: say so loudly
            if self._stopping:
                return
            logger.critical("%s pool: the supervisor failed; no more tasks can run in child processes",
                            self.name, exc_info=True)
            raise

    def _next_timeout(self) -> float:
        now = time.monotonic()
        timeout = POLL_MAX
        for child in self._children:
            job = child.job
            if job is not None and job.deadline is not None and job.reason is None:
                timeout = min(timeout, job.deadline - now)
        if len(self._live()) < self.size:
            timeout = min(timeout, self._respawn_at - now)
        return max(timeout, 0.0)

    def _spawn_missing(self) -> None:
        """Start children until there are ``size`` live ones (with backoff after boot failures)."""
        while len(self._live()) < self.size and time.monotonic() >= self._respawn_at:
            self._spawn()

    def _spawn(self) -> None:
        from greenq.pools import child as child_module
        number = next(self._numbers)
        job_rx, job_tx = self._context.Pipe(duplex=False)      # os.pipe: blocking in both processes
        result_rx, result_tx = self._context.Pipe(duplex=False)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=child_module.main, args=(job_rx, result_tx, self._boot),
            name=f"greenq-{self.name}-{number}", daemon=False)
        process.start()
        job_rx.close()
        result_tx.close()
        self._children.append(Child(process, job_tx, result_rx, number))
        logger.debug("%s pool: started child %d (pid %d)", self.name, number, process.pid)

    def _receive(self, child: Child) -> bool:
        """Read one message from ``child``; False if the child is gone."""
        try:
            message = child.rx.recv()
        except (EOFError, OSError):
            return False
        kind = message[0]
        if kind == "ready":
            with self._lock:
                child.ready = True
                self._respawn_failures = 0
                self._changed.notify_all()
        elif kind == "done":
            _, job_id, report = message
            self._on_done(child, job_id, report)
        elif kind == "boot-error":
            logger.error("%s pool: child %d could not start:\n%s", self.name, child.pid, message[1])
            with self._lock:
                if not any(c.ready for c in self._children):
                    self._boot_error = message[1]
                self._changed.notify_all()
        return True

    def _on_done(self, child: Child, job_id: int, report: dict[str, Any]) -> None:
        kill_now = False
        with self._lock:
            job = child.job
            if job is None or job.id != job_id:
                logger.warning("%s pool: child %d reported job %s it was not running", self.name,
                               child.pid, job_id)
                return
            child.jobs.popleft()
            child.tasks += 1
            rss = report.get("rss")
            following = child.job
            if following is not None:   # already in the child's pipe: it has started
                following.start_clock(time.monotonic())
                kill_now = following.reason is not None   # revoked or timed out while queued
            reasons = []
            if self.max_memory_per_child and rss and rss > self.max_memory_per_child:
                reasons.append(f"it uses {rss} KiB (max_memory_per_child {self.max_memory_per_child})")
            if self.max_tasks_per_child and child.tasks >= self.max_tasks_per_child:
                reasons.append(f"it ran {child.tasks} tasks (max_tasks_per_child)")
            if job.reason is not None or kill_now:
                child.retiring = True   # being killed (the job finished first: report what it did)
            elif reasons:
                self._retire(child, "; ".join(reasons))
            self._changed.notify_all()
        if kill_now:
            _kill(child.pid, signal.SIGKILL)
        exc = report.get("exc")
        outcome = Outcome(job.request, report["state"], report["action"],
                          retval=Shown(report.get("retval", "None")),
                          exc=ChildException(exc, report.get("exc_type")) if exc is not None else None,
                          traceback=report.get("traceback"))
        self._deliver(job, outcome)

    def _retire(self, child: Child, why: str) -> None:
        """Let ``child`` finish the jobs it has, then exit; a replacement starts now."""
        if child.retiring:
            return
        child.retiring = True
        self.replaced += 1
        logger.info("%s pool: replacing child %d: %s", self.name, child.pid, why)
        try:
            child.tx.send(None)   # behind the jobs already in its pipe
        except OSError:
            pass
        self._wake()

    def _on_exit(self, child: Child) -> None:
        while self._readable(child) and self._receive(child):
            pass   # reports written just before it exited
        child.process.join(0.5)  # reap; the sentinel says it has exited
        exitcode = child.process.exitcode
        with self._lock:
            if child not in self._children:
                return
            self._children.remove(child)
            jobs = list(child.jobs)
            child.jobs.clear()
            planned = child.retiring and not jobs
            if not planned and not self._stopping:
                self.replaced += 1
                if not child.ready:
                    self._respawn_failures += 1
                    self._last_exit = describe_exit(exitcode)
                    self._respawn_at = time.monotonic() + min(
                        RESPAWN_BACKOFF_MAX, 0.5 * 2 ** (self._respawn_failures - 1))
            self._changed.notify_all()
        _close(child)
        if planned or self._stopping:
            logger.debug("%s pool: child %d exited (%s)", self.name, child.pid, describe_exit(exitcode))
            return
        if not jobs:
            if child.ready:  # a child that failed to boot has said why already
                logger.error("%s pool: idle child %d exited unexpectedly (%s); starting a new one",
                             self.name, child.pid, describe_exit(exitcode))
            return
        running, waiting = jobs[0], jobs[1:]
        if running.reason == "unsent":
            waiting.insert(0, running)
        else:
            self._deliver(running, self._ended_outcome(running, child, exitcode))
        for job in waiting:
            self._deliver(job, self._unstarted_outcome(job, child))

    @staticmethod
    def _readable(child: Child) -> bool:
        try:
            return bool(child.rx.poll(0))
        except (OSError, EOFError, ValueError):
            return False

    def _unstarted_outcome(self, job: Job, child: Child) -> Outcome:
        """A job that was waiting in the pipe of a child that exited: it never ran."""
        request = job.request
        if job.reason == "terminated":
            return job.tracer.on_terminated(request.task, request, True)
        logger.warning("task %s[%s] was waiting for child %d, which exited: requeued", request.name,
                       request.id, child.pid)
        return Outcome(request, states.REJECTED, REQUEUE)

    def _ended_outcome(self, job: Job, child: Child, exitcode: int | None) -> Outcome:
        """The outcome of a job whose child did not report: stored here, in the parent."""
        request, tracer = job.request, job.tracer
        task = request.task
        ignore_result = bool(request.ignore_result or task.ignore_result)
        if job.reason == "timeout":
            logger.error("task %s[%s] hit its hard time limit (%ss): child %d killed and replaced",
                         request.name, request.id, job.hard, child.pid)
            return tracer.on_failure(task, request, TimeLimitExceeded(job.hard), None, True, ignore_result,
                                     timed_out=True)
        if job.reason == "terminated":
            return tracer.on_terminated(task, request, True)
        exc = WorkerLostError(f"the child process running the task (pid {child.pid}) exited with "
                              f"{describe_exit(exitcode)}")
        if request.acks_late and task.reject_on_worker_lost:
            logger.error("task %s[%s]: %s; requeued (acks_late and reject_on_worker_lost)",
                         request.name, request.id, exc)
            return Outcome(request, states.REJECTED, REQUEUE, exc=exc)
        return tracer.on_failure(task, request, exc, None, True, ignore_result)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._children if c.job is not None and c.job.reason is None
                    and c.job.deadline is not None and c.job.deadline <= now]
            for child in late:
                child.job.reason = "timeout"  # type: ignore[union-attr]
        for child in late:
            _kill(child.pid, signal.SIGKILL)

    def _deliver(self, job: Job, outcome: Outcome) -> None:
        outcome.runtime = time.monotonic() - job.started_at if job.started_at is not None else 0.0
        try:
            if job.tracer.emit is not None:
                job.tracer.emit_outcome(outcome)
        except Exception:  # an event that cannot be sent must not lose the outcome
            logger.exception("task %s[%s]: could not send its event", job.request.name, job.request.id)
        job.on_outcome(outcome)


def _wait_readable(fds: list[int], timeout: float) -> list[int]:
    """The fds in ``fds`` that are readable (or closed) within ``timeout`` seconds.

    ``select.poll`` where it exists (gevent's when patched; no limit on fd
    numbers), ``select.select`` otherwise (eventlet's patched module has no poll).
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return [fd for fd, _ in poller.poll(timeout * 1000.0)]
    readable, _, _ = select.select(fds, [], [], timeout)
    return list(readable)


def _kill(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def _close(child: Child) -> None:
    for conn in (child.tx, child.rx):
        try:
            conn.close()
        except OSError:
            pass
    try:
        child.process.close()
    except ValueError:
        pass  # still running (stop() gave up on it); it is reaped at exit


class PreforkPool(BasePool):
    """``-P prefork``: every request runs in a child process.

    The worker submits requests to :attr:`processes` (a :class:`ProcessPool`)
    instead of spawning them into slots; this class gives the loop the rest
    of the pool interface (free slots, kill, grow/shrink, sleeping, native
    threads).  Time limits are enforced by the process pool, not here.
    """

    name = "prefork"
    supports_soft_time_limit = True
    supports_hard_time_limit = True
    interrupts_blocking_calls = True   # the hard limit kills the child

    def __init__(self, limit: int, *, app: "App | None" = None, **options: Any) -> None:
        super().__init__(limit, **options)
        if app is None:
            raise ConfigurationError("the prefork pool needs the app: Worker passes it")
        self.processes = ProcessPool(app, limit, **options)

    def start(self) -> None:
        self.processes.start()

    def stop(self) -> None:
        self.processes.stop()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise PoolError("the prefork pool runs requests in child processes: use processes.submit()")

    def free_count(self) -> int:
        return self.processes.free_count()

    @property
    def active(self) -> int:
        return self.processes.active

    def join(self, timeout: float | None) -> bool:
        return self.processes.join(timeout)

    def kill(self, handle: Any, exc_type: type[BaseException]) -> bool:
        return isinstance(handle, Job) and handle.kill(exc_type)

    def grow(self, n: int) -> int:
        self.limit = self.processes.grow(n)
        return self.limit

    def shrink(self, n: int) -> int:
        self.limit = self.processes.shrink(n)
        return self.limit

    def time_limits(self, soft: float | None, hard: float | None) -> ContextManager[None]:
        return no_limits()

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self.processes.info()}

