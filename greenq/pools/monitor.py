"""The hub monitor: a native thread that notices when the hub stops turning.

Green pools enforce time limits cooperatively: a ``gevent.Timeout`` fires
when the task yields.  A task that never yields (``while True: x += 1``, a
long pure-Python parse) holds the hub, so no timer fires, nothing else runs,
and Celery's green pools simply wait (see reference/green-pool-pitfalls.md).

The monitor runs in a real OS thread.  The hub bumps a counter every
``TICK`` seconds from a loop timer; when the counter stops moving, the hub is
blocked, and the greenlet holding it is the one task greenlet that is
running (a running greenlet has no saved frame: ``gr_frame is None``).  The
monitor then, in this order:

1. after ``blocking_threshold`` seconds, logs one report naming the task and
   the stack it is blocked in, and counts it (``stats()``);
2. past the task's soft or hard limit, raises ``SoftTimeLimitExceeded`` or
   ``HardTimeLimit`` inside it with ``PyThreadState_SetAsyncExc`` on the main
   thread.  The exception is delivered at the task's next bytecode, so
   pure-Python loops stop; a thread blocked inside one C call (an unpatched
   ``time.sleep``, a blocking read in an extension) only sees it when that
   call returns;
3. if the hub is still blocked ``stuck_exit_after`` seconds after the hard
   limit was raised, calls ``on_stuck(request)``: the worker stores the
   failure and exits so its supervisor can start a fresh one (see
   docs/time-limits.md).

An exception raised this way lands in whatever the main thread runs next,
so the monitor raises only into a greenlet that has held the hub without a
break for at least ``GRACE`` seconds, and checks again right after; if the
task switched away in between, the pending exception is withdrawn.
"""
from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any, Callable

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.deadlines import raise_in_thread

logger = logging.getLogger("greenq.pools.monitor")

TICK = 0.05    # seconds between the hub's ticks
PERIOD = 0.05  # seconds between the monitor's looks
GRACE = 0.25   # seconds a greenlet must have held the hub before the monitor raises into it


class Watched:
    """A running task greenlet and its deadlines (monotonic seconds)."""

    __slots__ = ("greenlet", "request", "soft_at", "hard_at", "soft_sent", "hard_sent_at")

    def __init__(self, greenlet: Any, request: Any) -> None:
        self.greenlet = greenlet
        self.request = request
        self.soft_at: float | None = None
        self.hard_at: float | None = None
        self.soft_sent = False
        self.hard_sent_at: float | None = None


def describe(request: Any) -> str:
    if request is None:
        return "no task (the worker's own code)"
    return f"task {getattr(request, 'name', '?')}[{getattr(request, 'id', '?')}]"


class HubMonitor:
    """Watches one hub from a native thread.

    Args:
        start_thread: ``start_thread(target, name)`` starting a real OS thread.
        sleep: the original (unpatched) ``time.sleep``.
        main_ident: the hub thread's id from the original ``_thread.get_ident``.
        blocking_threshold: seconds of a blocked hub before a report; None: no reports.
        stuck_exit_after: seconds after the hard limit before ``on_stuck``; None: never.
    """

    def __init__(self, start_thread: Callable[[Callable[[], None], str], Any], sleep: Callable[[float], None],
                 main_ident: int, blocking_threshold: float | None = 1.0,
                 stuck_exit_after: float | None = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._start_thread = start_thread
        self._sleep = sleep
        self.main_ident = main_ident
        self.blocking_threshold = blocking_threshold or None
        self.stuck_exit_after = stuck_exit_after or None
        self._clock = clock
        self.ticks = 0
        self.running: dict[Any, Watched] = {}  # greenlet -> Watched; written by the hub only
        self.on_stuck: Callable[[Any], None] | None = None
        self.blocking_count = 0
        self.last_blocking: dict[str, Any] | None = None
        self.escalations = 0
        self._stopping = False
        self._thread: Any = None
        self._seen_tick = 0
        self._moved_at = clock()
        self._reported = False
        self._stuck_called = False

    # called in the hub ----------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1

    def task_started(self, greenlet: Any, request: Any) -> None:
        self.running[greenlet] = Watched(greenlet, request)

    def task_finished(self, greenlet: Any) -> None:
        self.running.pop(greenlet, None)

    def set_limits(self, greenlet: Any, soft: float | None, hard: float | None) -> Watched | None:
        watched = self.running.get(greenlet)
        if watched is not None:
            now = self._clock()
            watched.soft_at = now + soft if soft else None
            watched.hard_at = now + hard if hard else None
        return watched

    # any thread -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = self._start_thread(self._run, "greenq-hub-monitor")

    def stop(self) -> None:
        self._stopping = True

    def blocked_for(self) -> float:
        """Seconds since the hub last ticked (0.0 while it turns)."""
        return max(0.0, self._clock() - self._moved_at - TICK) if self._seen_tick == self.ticks else 0.0

    def current(self) -> Watched | None:
        """The task greenlet running in the hub's thread now, if any."""
        for watched in list(self.running.values()):
            greenlet = watched.greenlet
            if greenlet.gr_frame is None and not greenlet.dead and bool(greenlet):
                return watched
        return None

    def raise_in(self, watched: Watched, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in ``watched``'s greenlet if it is the one holding the hub."""
        if self.blocked_for() < GRACE or self.current() is not watched:
            return False
        raise_in_thread(self.main_ident, exc_type)
        if self.current() is not watched:  # it switched away just now: withdraw the exception
            raise_in_thread(self.main_ident, None)
            return False
        self.escalations += 1
        return True

    def stats(self) -> dict[str, Any]:
        return {"count": self.blocking_count, "last": self.last_blocking, "escalations": self.escalations,
                "threshold": self.blocking_threshold}

    # the monitor thread -----------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            self._sleep(PERIOD)
            try:
                self.check()
            except Exception:  # the monitor must outlive anything it looks at
                logger.exception("hub monitor: check failed")

    def check(self) -> None:
        now = self._clock()
        if self.ticks != self._seen_tick:
            self._seen_tick = self.ticks
            self._moved_at = now
            self._reported = False
            self._stuck_called = False
            return
        blocked = self.blocked_for()
        if blocked < GRACE:
            return
        watched = self.current()
        if self.blocking_threshold is not None and blocked >= self.blocking_threshold and not self._reported:
            self._reported = True
            self.report(watched, blocked)
        if watched is None:
            return
        if watched.soft_at is not None and not watched.soft_sent and now >= watched.soft_at + GRACE:
            if self.raise_in(watched, SoftTimeLimitExceeded):
                watched.soft_sent = True
                logger.warning("%s: soft time limit passed while it held the hub; raised inside it",
                               describe(watched.request))
        if watched.hard_at is not None and now >= watched.hard_at + GRACE:
            if watched.hard_sent_at is None:
                if self.raise_in(watched, HardTimeLimit):
                    watched.hard_sent_at = now
                    logger.error("%s: hard time limit passed while it held the hub without yielding; "
                                 "raised inside it", describe(watched.request))
            elif (self.stuck_exit_after is not None and not self._stuck_called
                  and now - watched.hard_sent_at >= self.stuck_exit_after and self.on_stuck is not None):
                self._stuck_called = True
                self.on_stuck(watched.request)

    def report(self, watched: Watched | None, blocked: float) -> None:
        frame = sys._current_frames().get(self.main_ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        request = watched.request if watched is not None else None
        self.blocking_count += 1
        self.last_blocking = {"task": getattr(request, "name", None), "id": getattr(request, "id", None),
                              "blocked_for": round(blocked, 3), "at": time.time()}
        logger.warning("the hub has been blocked for %.1fs by %s: nothing else runs until it yields "
                       "(a blocking call that gevent/eventlet cannot patch, or a long CPU loop; "
                       "move CPU work to --cpu-pool). Its stack:\n%s", blocked, describe(request), stack)
