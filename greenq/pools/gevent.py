"""The gevent pool: one green thread per running task, in one OS thread."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import gevent
import gevent.pool
from gevent import monkey

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.base import BasePool, NativeThread


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

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._group.spawn(fn, *args)

    def free_count(self) -> int:
        return max(0, self.limit - len(self._group))

    def join(self, timeout: float | None) -> bool:
        return self._group.join(timeout=timeout)

    def kill(self, handle: Any, exc_type: type[BaseException]) -> bool:
        if handle.dead:
            return False
        handle.kill(exc_type, block=False)
        return True

    def grow(self, n: int) -> int:
        self.limit += n
        return self.limit

    def shrink(self, n: int) -> int:
        self.limit = max(1, self.limit - n)
        return self.limit

    @contextlib.contextmanager
    def time_limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        # Two independent timers, each raising its own exception instance in
        # this greenlet: catching the soft one cannot cancel the hard one.
        timers = []
        if hard:
            timers.append(gevent.Timeout(hard, HardTimeLimit(hard)))
        if soft:
            timers.append(gevent.Timeout(soft, SoftTimeLimitExceeded(soft)))
        for timer in timers:
            timer.start()
        try:
            yield
        finally:
            for timer in timers:
                timer.close()

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def start_native_thread(self, target: Callable[[], None], name: str) -> NativeThread:
        return NativeThread(target, name,
                            monkey.get_original("_thread", "start_new_thread"),
                            monkey.get_original("_thread", "allocate_lock"))

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> bool:
        self._hub.loop.run_callback_threadsafe(fn)
        return True
