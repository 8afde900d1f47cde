"""The eventlet pool.  Supported, not first-class: eventlet's maintainers
discourage new use.  Same interface and guarantees as the gevent pool, the
hub monitor included (:mod:`greenq.pools.monitor`); what it lacks is a
thread-safe hub callback, so changes from the control thread wait for the
control loop's next tick."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import eventlet
import eventlet.greenpool
from eventlet import patcher

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.base import BasePool, NativeThread
from greenq.pools.monitor import TICK, HubMonitor, Watched


class EventletPool(BasePool):
    name = "eventlet"
    is_green = True

    def __init__(self, limit: int, **options: Any) -> None:
        super().__init__(limit, **options)
        self._pool = eventlet.greenpool.GreenPool(limit)
        self._hub = eventlet.hubs.get_hub()
        self._pending: list[Callable[[], Any]] = []
        self.monitor: HubMonitor | None = None
        self._ticker: Any = None

    def start(self) -> None:
        """Start the hub monitor (see :mod:`greenq.pools.monitor`)."""
        thread = patcher.original("_thread")
        self.monitor = monitor = HubMonitor(
            self.start_native_thread, patcher.original("time").sleep, thread.get_ident(),
            blocking_threshold=self.options.get("blocking_threshold", 1.0),
            stuck_exit_after=self.options.get("stuck_exit_after", 10.0))

        def tick() -> None:
            while True:
                monitor.tick()
                eventlet.sleep(TICK)

        self._ticker = eventlet.spawn(tick)
        monitor.start()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        if self._ticker is not None:
            self._ticker.kill()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.monitor is None:
            return self._pool.spawn(fn, *args)
        return self._pool.spawn(_watched, self.monitor, fn, args)

    def free_count(self) -> int:
        return self._pool.free()

    def join(self, timeout: float | None) -> bool:
        with eventlet.Timeout(timeout, False):
            self._pool.waitall()
            return True
        return False

    def kill(self, handle: Any, exc_type: type[BaseException]) -> bool:
        if handle.dead:
            return False
        # GreenThread.kill switches into the target at once; schedule it so the
        # caller (the control loop) is never blocked by the target's cleanup.
        eventlet.spawn_n(handle.kill, exc_type)
        return True

    def kill_threadsafe(self, handle: Any, exc_type: type[BaseException]) -> bool | None:
        """From another thread: only into a task that holds the hub; otherwise
        None, and the caller hands the kill to the control loop."""
        if handle.dead:
            return False
        monitor = self.monitor
        watched = monitor.running.get(handle) if monitor is not None else None
        if watched is not None and monitor.raise_in(watched, exc_type):  # type: ignore[union-attr]
            return True
        return None

    def grow(self, n: int) -> int:
        self.limit += n
        self._pool.resize(self.limit)
        return self.limit

    def shrink(self, n: int) -> int:
        self.limit = max(1, self.limit - n)
        self._pool.resize(self.limit)
        return self.limit

    @contextlib.contextmanager
    def time_limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        # As in the gevent pool: two hub timers, and flags shared with the monitor.
        current = eventlet.getcurrent()
        watched = self.monitor.set_limits(current, soft, hard) if self.monitor is not None else None
        timers = []
        for seconds, exc_type in ((hard, HardTimeLimit), (soft, SoftTimeLimitExceeded)):
            if seconds:
                timers.append(self._hub.schedule_call_global(seconds, _expire, current, watched, exc_type, seconds))
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()
            if watched is not None:
                watched.soft_at = watched.hard_at = None

    def sleep(self, seconds: float) -> None:
        eventlet.sleep(seconds)

    def native_sleep(self, seconds: float) -> None:
        patcher.original("time").sleep(seconds)

    def start_native_thread(self, target: Callable[[], None], name: str) -> NativeThread:
        thread = patcher.original("_thread")
        return NativeThread(target, name, thread.start_new_thread, thread.allocate_lock)

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> bool:
        # eventlet has no thread-safe hub callback; the control loop runs
        # queued calls on its next tick.
        return False

    def info(self) -> dict[str, Any]:
        info = super().info()
        if self.monitor is not None:
            info["blocking"] = self.monitor.stats()
        return info


def _watched(monitor: HubMonitor, fn: Callable[..., Any], args: tuple) -> Any:
    current = eventlet.getcurrent()
    monitor.task_started(current, args[0] if args else None)
    try:
        return fn(*args)
    finally:
        monitor.task_finished(current)


def _expire(greenlet: Any, watched: Watched | None, exc_type: type[BaseException], seconds: float) -> None:
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
