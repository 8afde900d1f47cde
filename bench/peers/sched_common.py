"""What the scheduling benchmark's workers share (see bench/scheduling.py).

Environment: BENCH_RUN (prefix of every key and queue), BENCH_REDIS_URL,
BENCH_VT (the Redis visibility timeout, seconds), BENCH_RATE (the rate
limit of ``limited``).  Each task records what it saw in a Redis list:

    <run>-stamps    [task id, seconds late]   for ``stamp(eta)``
    <run>-limited   epoch seconds             for ``limited()``
"""
from __future__ import annotations

import json
import os
import time

import redis

RUN = os.environ.get("BENCH_RUN", "sched-manual")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
VT = float(os.environ.get("BENCH_VT", "3600"))
RATE = os.environ.get("BENCH_RATE", "20/s")
QUEUE = f"{RUN}-q"
TRANSPORT_OPTIONS = {"visibility_timeout": VT, "unacked_key": f"{RUN}-unacked",
                     "unacked_index_key": f"{RUN}-unacked_index", "unacked_mutex_key": f"{RUN}-unacked_mutex"}

# blocking: 1000 green threads share 200 connections, waiting for one rather than failing
client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=200,
                                                                          timeout=60))


def record_stamp(task_id: str, eta: float) -> None:
    late = time.time() - eta
    client.rpush(f"{RUN}-stamps", json.dumps([task_id, late]))


def record_limited() -> None:
    client.rpush(f"{RUN}-limited", repr(time.time()))


def ready() -> None:
    client.set(f"{RUN}:ready", repr(time.time()), ex=3600)
