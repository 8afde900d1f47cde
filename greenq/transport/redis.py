"""kombu's Redis transport, tuned for a worker that takes thousands of messages a second.

Everything on the wire and in Redis stays kombu's: the queue lists and their
priority keys, the message envelope, and the ack-emulation records
(``unacked`` hash, ``unacked_index`` sorted set), so greenq and Celery
workers can share queues, and either can restore the other's unacked
messages after the visibility timeout.  What changes is the number of round
trips per message:

* **One shared client.**  kombu (5.7) builds a new ``redis.Redis`` object for
  every publish, delivery and ack; with redis-py 8 that costs ~0.2 ms of CPU
  each.  A ``redis.Redis`` is safe to share (each command borrows a pooled
  connection), so the channel builds one and reuses it.
* **Batched fetch.**  kombu takes one message per ``BRPOP`` and then records it
  as unacked in a second round trip (and a crash in between loses it).  Here,
  after a ``BRPOP`` returns, one Lua script pops up to ``fetch_batch`` more
  messages -- never more than the prefetch window allows -- and records each
  in ``unacked``/``unacked_index`` in the same atomic step.  ``BRPOP`` is only
  what waits when the queue is empty.  The script answers with two strings
  (which queue each message came from, and the messages as one JSON array),
  so redis-py parses two replies per batch, not two per message, and the
  envelopes are decoded in one call.
* **Buffered acks.**  Acks are collected and removed from the unacked records
  in one pipeline, before the next poll (or every ``ack_batch`` acks).  An
  ack not yet flushed when the process dies means the message comes back
  after the visibility timeout: at-least-once, never lost.

With ``global_keyprefix`` set, the batched fetch is off and kombu's own path
is used (the Lua script would need the prefix on every key).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from greenq.protocol import json_loads

FETCH_BATCH = 100
ACK_BATCH = 500

# KEYS: the queue keys in the order to take from (priority first), then the
#       unacked hash and the unacked index.
# ARGV: [1] most messages to take, [2] now (epoch seconds, the index score)
# Returns {} when nothing was taken, else two strings: the 1-based KEYS
# position of each message, comma-separated, and the messages as one JSON
# array (each one was decoded by cjson above, so the array is valid JSON).
FETCH_SCRIPT = """
local limit = tonumber(ARGV[1])
local now = ARGV[2]
local nkeys = #KEYS - 2
local unacked = KEYS[nkeys + 1]
local index = KEYS[nkeys + 2]
local raws = {}
local positions = {}
local taken = 0
for i = 1, nkeys do
  while taken < limit do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    local props = cjson.decode(raw)['properties']
    local info = props['delivery_info'] or {}
    local tag = props['delivery_tag']
    redis.call('ZADD', index, now, tag)
    redis.call('HSET', unacked, tag,
      '[' .. raw .. ',' .. cjson.encode(info['exchange'] or '') .. ',' ..
      cjson.encode(info['routing_key'] or '') .. ']')
    taken = taken + 1
    raws[taken] = raw
    positions[taken] = i
  end
  if taken >= limit then break end
end
if taken == 0 then
  return {}
end
return {table.concat(positions, ','), '[' .. table.concat(raws, ',') .. ']'}
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation with buffered acks and pre-recorded deliveries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_acks: list[str] = []
        self._recorded: set[str] = set()  # delivery tags the fetch script already recorded

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
            kombu_redis.virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._pending_acks.append(delivery_tag)
        kombu_redis.virtual.QoS.ack(self, delivery_tag)
        if len(self._pending_acks) >= ACK_BATCH:
            self.flush_acks()

    def flush_acks(self) -> None:
        tags, self._pending_acks = self._pending_acks, []
        if not tags:
            return
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.zrem(self.unacked_index_key, *tags)
            pipe.hdel(self.unacked_key, *tags)
            pipe.execute()


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None
    _fetch_script: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None:
            shared = self._shared_client = self._create_client()
        yield shared

    @property
    def fetch_batch(self) -> int:
        return int(self.connection.client.transport_options.get("fetch_batch", FETCH_BATCH))

    def _brpop_read(self, **options: Any) -> bool:
        delivered = super()._brpop_read(**options)
        if delivered and not self.global_keyprefix and not self.closed:
            self._fetch_more()
        return delivered

    def _fetch_more(self) -> None:
        room = self.qos.can_consume_max_estimate()
        limit = self.fetch_batch if room is None else min(room, self.fetch_batch)
        queues = list(self.active_queues)
        if limit <= 0 or not queues:
            return
        steps = [(queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues]
        with self.conn_or_acquire() as client:
            if self._fetch_script is None:
                self._fetch_script = client.register_script(FETCH_SCRIPT)
            reply = self._fetch_script(keys=[*(key for _, key in steps), self.unacked_key, self.unacked_index_key],
                                       args=[limit, time.time()], client=client)
        if not reply:
            return
        positions, payloads = bytes_to_str(reply[0]).split(","), json_loads(reply[1])
        recorded = self.qos._recorded
        deliver = self.connection._deliver
        for position, payload in zip(positions, payloads):
            recorded.add(payload["properties"]["delivery_tag"])
            deliver(payload, steps[int(position) - 1][0])

    def flush_acks(self) -> None:
        if self._qos is not None:
            self._qos.flush_acks()

    def close(self) -> None:
        try:
            self.flush_acks()
        except self.connection_errors:
            pass  # the server is gone: the messages come back after the visibility timeout
        # kombu's close() reads a BRPOP still in flight and hands its message
        # to the transport, which has already forgotten this channel, so the
        # message is dropped.  That loses a message requeued (or republished)
        # at shutdown, since the pending BRPOP takes it straight back.  Read
        # the reply here and push the message back to where it was popped from.
        if self._in_poll and not self.closed:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP")
            except self.connection_errors:
                reply = None  # the connection is gone; the server did not pop for it
            finally:
                self._in_poll = False
            if reply:
                queue_key, payload = reply
                self.client.rpush(queue_key, payload)
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        channel: Channel  # (kombu's two Transport bases disagree on this signature)
        for channel in self.channels or ():
            channel.flush_acks()
        return super().drain_events(connection, timeout=timeout)


TRANSPORT_ALIASES.setdefault("greenq-redis", "greenq.transport.redis:Transport")
