"""Redis result backend in Celery's layout.

Each result is ``SETEX celery-task-meta-<id> <result_expires> <json>`` and is
also ``PUBLISH``-ed on a channel of the same name, in one round trip (a Lua
script that also refuses to overwrite a stored SUCCESS).  ``get()``
subscribes to the channel before reading the key, so it waits on the
publication instead of polling and cannot miss a result stored in between.

Stores from many green threads (or threads) at once are written together:
the first store to arrive writes everything queued behind it in one
pipeline ("group commit"), so 1,000 green threads finishing together cost a
handful of round trips, not 1,000.  Each store still returns only once its
result is on the server.

Connections come from one bounded pool per process, sized from the worker's
concurrency (``result_max_connections`` overrides); when the pool is
exhausted a caller waits up to ``broker_pool_acquire_timeout`` and then gets
a :class:`~greenq.exceptions.PoolError`, never a hang.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from greenq import states
from greenq.backends.base import Backend, GroupCommit, pending_meta
from greenq.exceptions import PoolError, TimeoutError

# KEYS[1] = result key; ARGV[1] = meta; ARGV[2] = ttl seconds (0: none)
STORE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and string.find(current, '"status": *"SUCCESS"') then
  return 0
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class RedisBackend(Backend):
    supports_native_join = True

    def __init__(self, app: Any, url: str | None = None) -> None:
        super().__init__(app, url)
        conf = app.conf
        options = dict(conf.result_backend_transport_options)
        prefix = options.pop("global_keyprefix", "")
        self.keyprefix = f"{prefix}_" if prefix and not prefix.endswith("_") else prefix
        size = conf.result_max_connections or app.connection_pool_size()
        self.pool = redis.BlockingConnectionPool.from_url(
            url or "redis://", max_connections=size, timeout=conf.broker_pool_acquire_timeout,
            socket_timeout=options.pop("socket_timeout", 30.0),
            socket_connect_timeout=options.pop("socket_connect_timeout", conf.broker_connection_timeout),
            health_check_interval=options.pop("health_check_interval", 25),
            **options)
        self.client = redis.Redis(connection_pool=self.pool)
        self._store_sha: str | None = None
        self._writes = GroupCommit(self._write_many)

    def key_for(self, task_id: str) -> str:
        return f"{self.keyprefix}{self.namespace}-task-meta-{task_id}"

    def _store(self, task_id: str, meta: dict[str, Any], state: str) -> None:
        ttl = int(self.expires) if self.expires else 0
        self._writes.submit((self.key_for(task_id), self.encode(meta), ttl))

    def _write_many(self, items: list[tuple[str, Any, int]]) -> None:
        try:
            try:
                self._evalsha_many(items)
            except NoScriptError:
                # Redis restarted or flushed its script cache: load and write again
                # (writing the same value twice is harmless).
                self._store_sha = None
                self._evalsha_many(items)
        except RedisConnectionError as exc:
            if "Timeout" in str(exc) or "pool" in str(exc).lower():
                raise PoolError(
                    f"no Redis result connection free within {self.pool.timeout}s "
                    f"({self.pool.max_connections} in the pool): raise result_max_connections") from exc
            raise

    def _evalsha_many(self, items: list[tuple[str, Any, int]]) -> None:
        sha = self._store_sha
        if sha is None:
            sha = self._store_sha = self.client.script_load(STORE_SCRIPT)
        if len(items) == 1:
            key, payload, ttl = items[0]
            self.client.execute_command("EVALSHA", sha, 1, key, payload, ttl)
            return
        pipe = self.client.pipeline(transaction=False)
        for key, payload, ttl in items:
            pipe.execute_command("EVALSHA", sha, 1, key, payload, ttl)
        pipe.execute()

    def _get(self, task_id: str) -> dict[str, Any] | None:
        payload = self.client.get(self.key_for(task_id))
        return self.decode(payload) if payload is not None else None

    def _forget(self, task_id: str) -> None:
        self.client.delete(self.key_for(task_id))

    def get_many_meta(self, task_ids: list[str]) -> list[dict[str, Any]]:
        if not task_ids:
            return []
        values = self.client.mget([self.key_for(t) for t in task_ids])
        return [self.decode(v) if v is not None else pending_meta(t) for t, v in zip(task_ids, values)]

    def wait_for_many(self, task_ids: Iterable[str], timeout: float | None = None,
                      interval: float = 0.0) -> Iterator[tuple[str, dict[str, Any]]]:
        waiting = set(dict.fromkeys(task_ids))
        if not waiting:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        key_to_id = {self.key_for(t): t for t in waiting}
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            keys = list(key_to_id)
            for start in range(0, len(keys), 1000):
                pubsub.subscribe(*keys[start:start + 1000])
            # read after subscribing: a result stored before is in the key, one
            # stored after arrives as a message
            order = list(waiting)
            for task_id, meta in zip(order, self.get_many_meta(order)):
                if meta["status"] in states.READY_STATES:
                    waiting.discard(task_id)
                    yield task_id, meta
            while waiting:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"{len(waiting)} result(s) not ready after {timeout}s, e.g. {next(iter(waiting))}")
                message = pubsub.get_message(timeout=min(left, 1.0) if left is not None else 1.0)
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"]
                found = key_to_id.get(channel.decode() if isinstance(channel, bytes) else channel)
                if found is None or found not in waiting:
                    continue
                meta = self.decode(message["data"])
                if meta["status"] in states.READY_STATES:
                    waiting.discard(found)
                    yield found, meta
        finally:
            try:
                pubsub.close()
            except Exception:  # closing a broken subscription must not hide the result
                pass

    def close(self) -> None:
        self.pool.disconnect()
