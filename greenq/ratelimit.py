"""Rate limits: parsing (used when a task is declared) and token buckets."""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any

from kombu.utils.limits import TokenBucket

from greenq.exceptions import ConfigurationError

logger = logging.getLogger("greenq.ratelimit")

RATE_LIMIT_SCOPES = ("worker", "global")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def parse_rate(rate: Any) -> float | None:
    """Tasks per second from ``"10/s"``, ``"100/m"``, ``"1000/h"`` or a number.

    ``None``, ``0`` and ``"0"`` mean no limit and return None.

    Raises:
        ConfigurationError: the value is not a rate.
    """
    if rate is None:
        return None
    if isinstance(rate, bool):
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    if isinstance(rate, (int, float)):
        if rate < 0:
            raise ConfigurationError(f"rate limit cannot be negative: {rate!r}")
        return float(rate) or None
    if not isinstance(rate, str):
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    match = _RATE.match(rate)
    if not match:
        raise ConfigurationError(f"rate limit must be like '10/s', '100/m', '1000/h' or a number, got {rate!r}")
    count = float(match.group(1))
    per = _UNITS[match.group(2) or "s"]
    return count / per or None


# ---------------------------------------------------------------------- buckets
#: Burst allowance, in seconds of the rate: a bucket holds ``rate * BURST``
#: tokens (at least one), so a limit above the loop's tick rate is still met
#: while a minute's count stays within a fraction of a percent of the limit.
BURST = 0.05


def bucket_for(rate: float) -> TokenBucket:
    """A kombu token bucket for ``rate`` tasks per second; its ``contents``
    deque holds the requests waiting for a token, oldest first."""
    return TokenBucket(rate, capacity=max(1.0, rate * BURST))


class RateLimiter:
    """Token buckets for the control loop: one per rate-limited task type,
    or one per key for tasks declared with ``rate_limit_key``.

    A request whose bucket is empty waits here, not in a pool slot, so a
    rate-limited task type never holds the slots other task types need
    (Celery's #8119).  The loop asks :meth:`next_due` how long it may sleep
    and :meth:`release` for the requests whose tokens have come.

    Args:
        app: the app, for the task registry.
        max_keys: buckets kept per task type with ``rate_limit_key``; the
            least recently used idle bucket is dropped past this.
        disabled: ``worker_disable_rate_limits``: admit everything.
    """

    def __init__(self, app: Any, max_keys: int = 10000, disabled: bool = False) -> None:
        self.app = app
        self.max_keys = max_keys
        self.disabled = disabled
        # task name -> (rate, {key: bucket}) in least-recently-used order
        self._buckets: dict[str, tuple[float, OrderedDict[Any, TokenBucket]]] = {}
        self._waiting: set[TokenBucket] = set()  # buckets with requests in `contents`
        self.held = 0
        self._bad_key_reported: set[str] = set()

    def admit(self, request: Any) -> bool:
        """True: ``request`` may run now (a token was taken).  False: it was
        queued in its bucket and comes back from :meth:`release`."""
        if self.disabled:
            return True
        task = request.task
        rate = parse_rate(task.rate_limit) if task.rate_limit else None
        if rate is None:
            return True
        bucket = self._bucket(task, rate, self._key(task, request))
        if not bucket.contents and bucket.can_consume(1):
            return True
        bucket.add(request)
        self._waiting.add(bucket)
        self.held += 1
        return False

    def release(self) -> list[Any]:
        """Every waiting request whose bucket has a token now, oldest first per bucket."""
        released: list[Any] = []
        for bucket in list(self._waiting):
            contents = bucket.contents
            while contents and bucket.can_consume(1):
                released.append(contents.popleft())
            if not contents:
                self._waiting.discard(bucket)
        self.held -= len(released)
        return released

    def next_due(self) -> float | None:
        """Seconds until the next waiting request can have a token (None: nothing waits)."""
        if not self._waiting:
            return None
        return min(bucket.expected_time(1) for bucket in self._waiting)

    def changed(self, task_name: str) -> list[Any]:
        """The task's rate changed (``rate_limit`` command): its buckets are
        rebuilt at the new rate on next use; returns the requests they held,
        for the loop to admit again."""
        entry = self._buckets.pop(task_name, None)
        if entry is None:
            return []
        waiting: list[Any] = []
        for bucket in entry[1].values():
            waiting.extend(bucket.contents)
            self._waiting.discard(bucket)
        self.held -= len(waiting)
        return waiting

    def drain(self) -> list[Any]:
        """Remove and return every waiting request (reconnect, shutdown)."""
        waiting = [request for bucket in self._waiting for request in bucket.contents]
        for bucket in self._waiting:
            bucket.clear_pending()
        self._waiting.clear()
        self.held = 0
        return waiting

    def discard(self, task_ids: set[str]) -> list[Any]:
        """Remove and return the waiting requests with these ids (revoked)."""
        found: list[Any] = []
        for bucket in list(self._waiting):
            keep = [r for r in bucket.contents if r.id not in task_ids]
            if len(keep) != len(bucket.contents):
                found.extend(r for r in bucket.contents if r.id in task_ids)
                bucket.contents.clear()
                bucket.contents.extend(keep)
                if not keep:
                    self._waiting.discard(bucket)
        self.held -= len(found)
        return found

    def waiting(self) -> list[Any]:
        return [request for bucket in self._waiting for request in bucket.contents]

    def info(self) -> dict[str, Any]:
        return {"held": self.held,
                "buckets": {name: len(buckets) for name, (_, buckets) in self._buckets.items()}}

    # ------------------------------------------------------------------ internals
    def _key(self, task: Any, request: Any) -> Any:
        key_fn = getattr(task, "rate_limit_key", None)
        if key_fn is None:
            return None
        try:
            key = key_fn(*request.args, **request.kwargs)
            hash(key)
            return key
        except Exception as exc:
            if task.name not in self._bad_key_reported:
                self._bad_key_reported.add(task.name)
                logger.error("task %s: rate_limit_key failed (%r) for %s; such calls share the task's "
                             "own bucket (reported once per task type)", task.name, exc, request.id)
            return None

    def _bucket(self, task: Any, rate: float, key: Any) -> TokenBucket:
        entry = self._buckets.get(task.name)
        if entry is None or entry[0] != rate:
            if entry is not None:  # rate changed outside changed(): keep the waiting requests
                for old in entry[1].values():
                    self._waiting.discard(old)
            buckets: OrderedDict[Any, TokenBucket] = OrderedDict()
            if entry is not None:
                for old_key, old in entry[1].items():
                    if old.contents:
                        fresh = bucket_for(rate)
                        fresh.contents.extend(old.contents)
                        buckets[old_key] = fresh
                        self._waiting.add(fresh)
            entry = self._buckets[task.name] = (rate, buckets)
        buckets = entry[1]
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = bucket_for(rate)
            if len(buckets) > self.max_keys:
                self._evict(buckets)
        else:
            buckets.move_to_end(key)
        return bucket

    def _evict(self, buckets: OrderedDict[Any, TokenBucket]) -> None:
        """Drop least recently used buckets with nothing waiting until within ``max_keys``."""
        for key in list(buckets):
            if len(buckets) <= self.max_keys:
                break
            if not buckets[key].contents:
                del buckets[key]
