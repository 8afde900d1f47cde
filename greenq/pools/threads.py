"""The threads pool: each running task in its own OS thread.

Time limits are raised inside the thread from a watcher thread
(:mod:`greenq.pools.deadlines`): pure-Python code is interrupted at once,
a thread blocked in a C call when that call returns.
"""
from __future__ import annotations

import _thread
import queue
import threading
from typing import Any, Callable, ContextManager

from greenq.exceptions import Terminated
from greenq.pools.base import BasePool
from greenq.pools.deadlines import Deadlines, raise_in_thread


class _Slot:
    __slots__ = ("thread_id", "done")

    def __init__(self) -> None:
        self.thread_id: int | None = None
        self.done = False


class ThreadPool(BasePool):
    name = "threads"
    interrupts_blocking_calls = False

    def __init__(self, limit: int, **options: Any) -> None:
        super().__init__(limit, **options)
        self._work: queue.SimpleQueue[tuple[Callable[..., Any], tuple, _Slot] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._deadlines = Deadlines(self.start_native_thread, _thread.allocate_lock, threading.get_ident)

    def start(self) -> None:
        self._add_threads(self.limit)

    def _add_threads(self, n: int) -> None:
        for _ in range(n):
            thread = threading.Thread(target=self._run, name=f"greenq-slot-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        self._deadlines.stop()

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            fn, args, slot = item
            slot.thread_id = threading.get_ident()
            try:
                fn(*args)
            except BaseException:  # the slot must survive anything the work raises
                pass
            finally:
                slot.done = True
                with self._lock:
                    self._busy -= 1
                    if self._busy == 0:
                        self._idle.notify_all()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> _Slot:
        slot = _Slot()
        with self._lock:
            self._busy += 1
        self._work.put((fn, args, slot))
        return slot

    def free_count(self) -> int:
        return max(0, self.limit - self._busy)

    def join(self, timeout: float | None) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def kill(self, handle: _Slot, exc_type: type[BaseException] = Terminated) -> bool:
        if handle.done or handle.thread_id is None:
            return False
        return raise_in_thread(handle.thread_id, exc_type)

    def grow(self, n: int) -> int:
        self.limit += n
        self._add_threads(n)
        return self.limit

    def shrink(self, n: int) -> int:
        n = min(n, self.limit - 1)
        self.limit -= n
        for _ in range(n):
            self._work.put(None)
            self._threads.pop()
        return self.limit

    def time_limits(self, soft: float | None, hard: float | None) -> ContextManager[None]:
        return self._deadlines.limits(soft, hard)
