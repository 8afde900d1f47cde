"""Time limits for code running in OS threads, enforced from a watcher thread.

One native watcher thread keeps a heap of deadlines.  When one passes it
raises an exception inside the target thread with CPython's
``PyThreadState_SetAsyncExc``.  That interrupts pure-Python code at the next
bytecode; it cannot interrupt a thread blocked inside a C call (``time.sleep``
without patching, a blocking read) until that call returns.

Disarming is race-free: if a deadline fired but its exception was not yet
delivered when the limited code finished, :meth:`Deadlines.disarm` clears the
pending exception, so it can never surface in the worker's own code.
"""
from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import time
from typing import Any, Callable, Iterator

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    """Raise ``exc_type`` in thread ``thread_id`` (None clears a pending one)."""
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.py_object()
    if exc_type is None:
        _set_async_exc.argtypes = (ctypes.c_ulong, ctypes.c_void_p)
        try:
            return _set_async_exc(thread_id, None) == 1
        finally:
            _set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
    return _set_async_exc(thread_id, obj) == 1


class Deadlines:
    """Deadlines for many threads, watched by one native thread."""

    def __init__(self, start_thread: Callable[[Callable[[], None], str], Any],
                 allocate_lock: Callable[[], Any], get_ident: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._start_thread = start_thread
        self._lock = allocate_lock()
        self._wakeup = allocate_lock()   # released to wake the watcher early
        self._wakeup.acquire()
        self._get_ident = get_ident
        self._clock = clock
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, tuple[int, type[BaseException]]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count(1)
        self._thread: Any = None
        self._stopping = False

    def arm(self, seconds: float, exc_type: type[BaseException]) -> int:
        """Raise ``exc_type`` in the calling thread after ``seconds``; returns a token."""
        token = next(self._ids)
        deadline = self._clock() + seconds
        with self._lock:
            self._armed[token] = (self._get_ident(), exc_type)
            heapq.heappush(self._heap, (deadline, token))
            first = self._heap[0][1] == token
            if self._thread is None:
                self._thread = self._start_thread(self._run, "greenq-deadlines")
        if first:
            self._wake()
        return token

    def disarm(self, token: int) -> bool:
        """Cancel ``token``; returns True if it had already fired."""
        with self._lock:
            self._armed.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
        if fired:
            # the exception may still be pending: never let it escape here
            raise_in_thread(self._get_ident(), None)
        return fired

    @contextlib.contextmanager
    def limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        """Soft then hard limit on the code inside the ``with`` block."""
        tokens = []
        if soft:
            tokens.append(self.arm(soft, SoftTimeLimitExceeded))
        if hard:
            tokens.append(self.arm(hard, HardTimeLimit))
        try:
            yield
        finally:
            for token in tokens:
                self.disarm(token)

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released
            self._wakeup.release()

    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    _, token = heapq.heappop(self._heap)
                    target = self._armed.pop(token, None)
                    if target is not None:
                        self._fired.add(token)
                        raise_in_thread(*target)
                wait = self._heap[0][0] - now if self._heap else 60.0
            self._wakeup.acquire(True, max(wait, 0.001))
