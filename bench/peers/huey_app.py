"""Huey: ``python -m bench.peers.huey_run bench.peers.huey_app.huey -k greenlet -w 1000``.

``huey_consumer`` does not patch the process; ``huey_run`` is the entry
point Huey's documentation asks for ("Using gevent"): patch, then run the
consumer.  The Redis pool is sized explicitly (each greenlet worker holds a
connection while it waits on BRPOP).  ``store_none`` so that a no-op's None
result is stored like in the other systems."""
import redis
from huey import RedisHuey, signals

from bench.peers.common import CONCURRENCY, REDIS_URL, RESULTS, RUN, progress
from bench.peers.common import fetch as _fetch

huey = RedisHuey(f"{RUN}-huey", results=RESULTS, store_none=True, clean_name=False,
                 connection_pool=redis.BlockingConnectionPool.from_url(
                     REDIS_URL, max_connections=CONCURRENCY + 50, timeout=30))


@huey.task()
def fetch(url):
    return _fetch(url)


@huey.task()
def noop():
    return None


@huey.on_startup()
def on_startup():
    progress.ready()


@huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR)
def on_done(signal, task, *args, **kwargs):
    progress.task_done(failed=signal == signals.SIGNAL_ERROR)
