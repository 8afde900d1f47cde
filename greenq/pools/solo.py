"""The solo pool: one task at a time, run inline by the control loop.

Useful for debugging and for tests.  Time limits use SIGALRM when the worker
runs in the main thread (which also interrupts blocking system calls), and
the watcher thread otherwise.
"""
from __future__ import annotations

import _thread
import contextlib
import signal
import threading
import time
from typing import Any, Callable, Iterator

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools.base import BasePool
from greenq.pools.deadlines import Deadlines


class SoloPool(BasePool):
    name = "solo"

    def __init__(self, limit: int = 1, **options: Any) -> None:
        super().__init__(1, **options)
        self._busy = False
        self._deadlines = Deadlines(self.start_native_thread, _thread.allocate_lock, threading.get_ident)

    @property
    def interrupts_blocking_calls(self) -> bool:  # type: ignore[override]
        return threading.current_thread() is threading.main_thread()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        self._busy = True
        try:
            fn(*args)
        finally:
            self._busy = False

    def free_count(self) -> int:
        return 0 if self._busy else 1

    def join(self, timeout: float | None) -> bool:
        return not self._busy

    def grow(self, n: int) -> int:
        return self.limit

    def shrink(self, n: int) -> int:
        return self.limit

    def stop(self) -> None:
        self._deadlines.stop()

    @contextlib.contextmanager
    def time_limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        if not (soft or hard):
            yield
            return
        if threading.current_thread() is not threading.main_thread():
            with self._deadlines.limits(soft, hard):
                yield
            return
        start = time.monotonic()
        stages = [(s, e) for s, e in ((soft, SoftTimeLimitExceeded), (hard, HardTimeLimit)) if s]
        stages.sort(key=lambda stage: stage[0])

        def on_alarm(signum: int, frame: Any) -> None:
            seconds, exc_type = stages.pop(0)
            if stages:  # arm the next stage before raising this one
                signal.setitimer(signal.ITIMER_REAL, max(stages[0][0] - (time.monotonic() - start), 0.001))
            raise exc_type(seconds)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, stages[0][0])
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
