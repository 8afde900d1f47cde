"""Rate limits: parsing (used when a task is declared) and token buckets."""
from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from greenq.exceptions import ConfigurationError

if TYPE_CHECKING:  # kombu is imported only once a worker runs: task modules must not import it
    from kombu.utils.limits import TokenBucket

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
#: tokens, so a limit above the loop's tick rate is still met while a
#: minute's count stays within a fraction of a percent of the limit.  At
#: least 1.5: with room for exactly one token, the time by which the loop
#: wakes late for each token would be lost, and the rate would fall short.
BURST = 0.05
MIN_CAPACITY = 1.5


def bucket_for(rate: float) -> "TokenBucket":
    """A kombu token bucket for ``rate`` tasks per second; its ``contents``
    deque holds the requests waiting for a token, oldest first."""
    from kombu.utils.limits import TokenBucket
    return TokenBucket(rate, capacity=max(MIN_CAPACITY, rate * BURST))


# Token bucket in Redis, shared by every worker.  Redis's own clock, so the
# workers' clocks need not agree.  Returns "0" when a token was taken, else
# the seconds until one will be there.
_GLOBAL_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 60000)
return tostring(wait)
"""
GLOBAL_RETRY = 1.0  # seconds: Redis unreachable, hold and ask again


class GlobalBucket:
    """A bucket kept in Redis (``rate_limit_scope="global"``): one rate for
    every worker.  Same interface as kombu's TokenBucket as the limiter uses
    it; between answers it remembers when Redis said a token will be there,
    so a waiting bucket costs one round trip per token, not one per tick."""

    def __init__(self, script: Any, key: str, rate: float) -> None:
        self.script, self.key, self.rate = script, key, rate
        self.capacity = max(MIN_CAPACITY, rate * BURST)
        self.contents: deque[Any] = deque()
        self._next_at = 0.0
        self._reported = False

    def can_consume(self, tokens: int = 1) -> bool:
        now = time.monotonic()
        if now < self._next_at:
            return False
        try:
            wait = float(self.script(keys=[self.key], args=[repr(self.rate), repr(self.capacity)]))
        except Exception as exc:
            if not self._reported:
                self._reported = True
                logger.error("global rate limit %s: Redis did not answer (%r); the task waits and greenq "
                             "asks again every %.0fs", self.key, exc, GLOBAL_RETRY)
            self._next_at = now + GLOBAL_RETRY
            return False
        self._reported = False
        if wait <= 0:
            return True
        self._next_at = now + wait
        return False

    def expected_time(self, tokens: int = 1) -> float:
        return max(0.0, self._next_at - time.monotonic())

    def add(self, item: Any) -> None:
        self.contents.append(item)

    def clear_pending(self) -> None:
        self.contents.clear()


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
        self._buckets: dict[str, tuple[float, OrderedDict[Any, "TokenBucket"]]] = {}
        self._waiting: set["TokenBucket"] = set()  # buckets with requests in `contents`
        self.held = 0
        self._bad_key_reported: set[str] = set()
        self._script: Any = None  # the global bucket's script, registered on first use

    def check(self) -> None:
        """At worker start: a task with ``rate_limit_scope="global"`` needs a Redis.

        Raises:
            ConfigurationError: it has none.
        """
        if not self.disabled and any(getattr(task, "rate_limit_scope", "worker") == "global"
                                     for task in self.app.tasks.values()):
            self._script = global_script(self.app)

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

    def _bucket(self, task: Any, rate: float, key: Any) -> "TokenBucket":
        entry = self._buckets.get(task.name)
        if entry is None or entry[0] != rate:
            if entry is not None:  # rate changed outside changed(): keep the waiting requests
                for old in entry[1].values():
                    self._waiting.discard(old)
            buckets: OrderedDict[Any, "TokenBucket"] = OrderedDict()
            if entry is not None:
                for old_key, old in entry[1].items():
                    if old.contents:
                        fresh = self._new_bucket(task, rate, old_key)
                        fresh.contents.extend(old.contents)
                        buckets[old_key] = fresh
                        self._waiting.add(fresh)
            entry = self._buckets[task.name] = (rate, buckets)
        buckets = entry[1]
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = self._new_bucket(task, rate, key)
            if len(buckets) > self.max_keys:
                self._evict(buckets)
        else:
            buckets.move_to_end(key)
        return bucket

    def _new_bucket(self, task: Any, rate: float, key: Any) -> Any:
        if getattr(task, "rate_limit_scope", "worker") != "global":
            return bucket_for(rate)
        if self._script is None:
            self._script = global_script(self.app)
        name = f"{self.app.conf.rate_limit_key_prefix}{task.name}" + ("" if key is None else f":{key}")
        return GlobalBucket(self._script, name, rate)

    def _evict(self, buckets: OrderedDict[Any, "TokenBucket"]) -> None:
        """Drop least recently used buckets with nothing waiting until within ``max_keys``."""
        for key in list(buckets):
            if len(buckets) <= self.max_keys:
                break
            if not buckets[key].contents:
                del buckets[key]


def global_script(app: Any) -> Any:
    """The registered Redis script for global buckets, on ``rate_limit_redis_url``
    (default: the broker's URL if it is Redis, else the result backend's).

    Raises:
        ConfigurationError: no Redis to keep global buckets in.
    """
    import redis

    url = app.conf.rate_limit_redis_url
    if not url:
        for candidate in (app.broker_url(), app.conf.result_backend or ""):
            if candidate.startswith(("redis://", "rediss://", "unix://")):
                url = candidate
                break
    if not url:
        raise ConfigurationError(
            "rate_limit_scope='global' keeps its buckets in Redis: set rate_limit_redis_url "
            "(or use a Redis broker or result backend)")
    client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    return client.register_script(_GLOBAL_BUCKET)
