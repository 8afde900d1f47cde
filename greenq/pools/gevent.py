"""The gevent pool: one green thread per running task, in one OS thread.

Time limits are hub timers that throw into the task's green thread when it
yields; a task that never yields is reached by the hub monitor
(:mod:`greenq.pools.monitor`), a native thread that also reports blocking.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import gevent
import gevent.pool
from gevent import monkey

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.base import BasePool, NativeThread
from greenq.pools.monitor import TICK, HubMonitor, Watched


class GeventPool(BasePool):
    name = "gevent"
    is_green = True
    supports_soft_time_limit = True
    supports_hard_time_limit = True

    def __init__(self, limit: int, **options: Any) -> None:
        super().__init__(limit, **options)
        # A Group tracks the running greenlets; the limit is ours, because the
        # control loop checks free_count() before it spawns (spawn never blocks)
        # and a plain number makes grow/shrink trivial.
        self._group = gevent.pool.Group()
        self._hub = gevent.get_hub()
        self.monitor: HubMonitor | None = None
        self._tick_timer: Any = None

    def start(self) -> None:
        """Start the hub monitor (see :mod:`greenq.pools.monitor`)."""
        self.monitor = HubMonitor(
            self.start_native_thread, monkey.get_original("time", "sleep"),
            monkey.get_original("_thread", "get_ident")(),
            blocking_threshold=self.options.get("blocking_threshold", 1.0),
            stuck_exit_after=self.options.get("stuck_exit_after", 10.0))
        self._tick_timer = self._hub.loop.timer(TICK, TICK)
        self._tick_timer.start(self.monitor.tick)
        self.monitor.start()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self._tick_timer is not None:
            self._tick_timer.close()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.monitor is None:
            return self._group.spawn(fn, *args)
        return self._group.spawn(_watched, self.monitor, fn, args)

    def free_count(self) -> int:
        return max(0, self.limit - len(self._group))

    def join(self, timeout: float | None) -> bool:
        return self._group.join(timeout=timeout)

    def kill(self, handle: Any, exc_type: type[BaseException]) -> bool:
        if handle.dead:
            return False
        handle.kill(exc_type, block=False)
        return True

    def kill_threadsafe(self, handle: Any, exc_type: type[BaseException]) -> bool:
        """Kill from another thread: straight into the task if it holds the hub,
        else through the hub's thread-safe callback."""
        if handle.dead:
            return False
        monitor = self.monitor
        if monitor is not None:
            watched = monitor.running.get(handle)
            if watched is not None and monitor.raise_in(watched, exc_type):
                return True
        self._hub.loop.run_callback_threadsafe(self.kill, handle, exc_type)
        return True

    def grow(self, n: int) -> int:
        self.limit += n
        return self.limit

    def shrink(self, n: int) -> int:
        self.limit = max(1, self.limit - n)
        return self.limit

    @contextlib.contextmanager
    def time_limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        # Two independent hub timers, each throwing its own exception into
        # this greenlet: catching the soft one cannot cancel the hard one.  The
        # monitor raises the same exceptions if the task never yields; the
        # flags on `watched` make each fire once, whichever gets there first.
        current = gevent.getcurrent()
        watched = self.monitor.set_limits(current, soft, hard) if self.monitor is not None else None
        timers = []
        for seconds, exc_type in ((hard, HardTimeLimit), (soft, SoftTimeLimitExceeded)):
            if seconds:
                timer = self._hub.loop.timer(seconds)
                timer.start(_expire, current, watched, exc_type, seconds)
                timers.append(timer)
        try:
            yield
        finally:
            for timer in timers:
                timer.close()
            if watched is not None:
                watched.soft_at = watched.hard_at = None

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def native_sleep(self, seconds: float) -> None:
        monkey.get_original("time", "sleep")(seconds)

    def start_native_thread(self, target: Callable[[], None], name: str) -> NativeThread:
        return NativeThread(target, name,
                            monkey.get_original("_thread", "start_new_thread"),
                            monkey.get_original("_thread", "allocate_lock"))

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> bool:
        self._hub.loop.run_callback_threadsafe(fn)
        return True

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.monitor is not None:
            info["blocking"] = self.monitor.stats()
        return info


def _watched(monitor: HubMonitor, fn: Callable[..., Any], args: tuple) -> Any:
    """Run a task in its green thread, known to the monitor while it runs."""
    current = gevent.getcurrent()
    monitor.task_started(current, args[0] if args else None)
    try:
        return fn(*args)
    finally:
        monitor.task_finished(current)


def _expire(greenlet: Any, watched: Watched | None, exc_type: type[BaseException], seconds: float) -> None:
    """A limit's hub timer fired: throw into the task unless the monitor already did."""
    if watched is not None:
        if exc_type is SoftTimeLimitExceeded:
            if watched.soft_sent:
                return
            watched.soft_sent = True
        else:
            if watched.hard_sent_at is not None:
                return
            watched.hard_sent_at = time.monotonic()
    greenlet.throw(exc_type(seconds))
