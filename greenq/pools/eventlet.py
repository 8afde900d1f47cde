"""The eventlet pool.  Supported, not first-class: eventlet's maintainers
discourage new use.  Same interface and guarantees as the gevent pool."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import eventlet
import eventlet.greenpool
from eventlet import patcher

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.base import BasePool, NativeThread


class EventletPool(BasePool):
    name = "eventlet"
    is_green = True

    def __init__(self, limit: int, **options: Any) -> None:
        super().__init__(limit, **options)
        self._pool = eventlet.greenpool.GreenPool(limit)
        self._hub = eventlet.hubs.get_hub()
        self._pending: list[Callable[[], Any]] = []

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.spawn(fn, *args)

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
        timers = []
        if hard:
            timers.append(eventlet.Timeout(hard, HardTimeLimit(hard)))
        if soft:
            timers.append(eventlet.Timeout(soft, SoftTimeLimitExceeded(soft)))
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()

    def sleep(self, seconds: float) -> None:
        eventlet.sleep(seconds)

    def start_native_thread(self, target: Callable[[], None], name: str) -> NativeThread:
        thread = patcher.original("_thread")
        return NativeThread(target, name, thread.start_new_thread, thread.allocate_lock)

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> bool:
        # eventlet has no thread-safe hub callback; the control loop runs
        # queued calls on its next tick.
        return False
