"""kombu's Redis transport, with one shared client per channel.

kombu (5.7) builds a new ``redis.Redis`` client object for every publish,
every delivery's bookkeeping and every ack; with redis-py 8 that costs
about 0.2 ms of CPU each time, most of a no-op task's budget.  A
``redis.Redis`` object is safe to share (each command takes a connection
from the pool), so this channel builds one and reuses it.  Keys, message
envelopes and the unacked bookkeeping are kombu's own, so greenq workers
and Celery workers can share queues on the same Redis.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None:
            shared = self._shared_client = self._create_client()
        yield shared

    def close(self) -> None:
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


TRANSPORT_ALIASES.setdefault("greenq-redis", "greenq.transport.redis:Transport")
