"""The pool interface every concurrency model implements.

A pool runs callables in *slots* (green threads, OS threads, the main
thread).  It never touches the broker: the worker's control loop asks it for
free slots, spawns work into them and gets outcomes back.  Everything that
depends on the concurrency model -- time limits, killing a running task,
sleeping, starting a native OS thread -- is a method here, so no other
module needs to know whether gevent is in use.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, ContextManager, Iterator


class NativeThread:
    """A real OS thread, also in a monkey-patched process.

    Built from the original ``_thread`` functions a pool hands in, because
    under gevent ``threading.Thread`` starts a greenlet instead.
    """

    def __init__(self, target: Callable[[], None], name: str,
                 start_new_thread: Callable[..., int], allocate_lock: Callable[[], Any]) -> None:
        self.name = name
        self._done = allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                target()
            finally:
                self._done.release()

        self.ident = start_new_thread(run, ())

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; returns False on timeout."""
        if self._done.acquire(True, -1 if timeout is None else timeout):
            self._done.release()
            return True
        return False

    def is_alive(self) -> bool:
        if self._done.acquire(False):
            self._done.release()
            return False
        return True


class BasePool:
    """Slots to run tasks in.  Subclasses override what differs."""

    name = "base"
    is_green = False
    #: what the pool can enforce; shown by ``inspect stats`` and in the docs
    supports_soft_time_limit = True
    supports_hard_time_limit = True
    interrupts_blocking_calls = False

    def __init__(self, limit: int, **options: Any) -> None:
        self.limit = limit
        self.options = options

    # lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Prepare the slots (threads, processes).  Called once by the worker."""

    def stop(self) -> None:
        """Release what :meth:`start` made.  Running work is not waited for."""

    # slots ------------------------------------------------------------------
    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a free slot and return a handle for :meth:`kill`.

        The caller checks :meth:`free_count` first; spawn never blocks.
        """
        raise NotImplementedError

    def free_count(self) -> int:
        raise NotImplementedError

    @property
    def active(self) -> int:
        return self.limit - self.free_count()

    def join(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for every slot to be free."""
        raise NotImplementedError

    def kill(self, handle: Any, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` inside the slot running ``handle``; True if sent."""
        return False

    def kill_threadsafe(self, handle: Any, exc_type: type[BaseException]) -> bool | None:
        """:meth:`kill`, called from another native thread (the control plane).

        Returns True or False as :meth:`kill` does when the pool could act
        from the calling thread, or None when it cannot: the caller then
        hands the kill to the worker's control loop.
        """
        return None

    def grow(self, n: int) -> int:
        """Add ``n`` slots; returns the new limit."""
        raise NotImplementedError

    def shrink(self, n: int) -> int:
        """Remove ``n`` slots (running work finishes first); returns the new limit."""
        raise NotImplementedError

    # time -------------------------------------------------------------------
    def time_limits(self, soft: float | None, hard: float | None) -> ContextManager[None]:
        """Context manager enforcing the limits on the code it wraps.

        At ``soft`` seconds :class:`~greenq.exceptions.SoftTimeLimitExceeded`
        is raised inside the code; at ``hard`` seconds
        :class:`~greenq.exceptions.HardTimeLimit` is.
        """
        return contextlib.nullcontext()

    def sleep(self, seconds: float) -> None:
        import time
        time.sleep(seconds)

    def native_sleep(self, seconds: float) -> None:
        """Sleep in a native thread (the control plane): the OS's sleep, never the hub's."""
        import time
        time.sleep(seconds)

    # threads ----------------------------------------------------------------
    def start_native_thread(self, target: Callable[[], None], name: str) -> Any:
        """Start ``target`` in a real OS thread (the control plane lives there)."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def call_soon_threadsafe(self, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` in the worker's main thread soon.

        Returns False when the pool has no way to do that itself; the worker
        then runs it from its control loop on the next tick.
        """
        return False

    def info(self) -> dict[str, Any]:
        """What ``inspect stats`` shows under ``pool``."""
        return {
            "implementation": f"greenq.pools.{self.name}",
            "max-concurrency": self.limit,
            "free-slots": self.free_count(),
            "soft-time-limit": self.supports_soft_time_limit,
            "hard-time-limit": self.supports_hard_time_limit,
        }


@contextlib.contextmanager
def no_limits() -> Iterator[None]:
    yield
