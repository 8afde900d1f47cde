"""Dramatiq: ``dramatiq-gevent bench.peers.dramatiq_app -p 1 -t 1000 -Q <run>-q``.

Redis pools are sized explicitly (redis-py 8's default of 100 connections
drops results at 1000 green threads); otherwise Dramatiq's defaults, with
the Results middleware when results are stored."""
import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, default_middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.peers.common import CONCURRENCY, QUEUE, REDIS_URL, RESULTS, RUN, progress
from bench.peers.common import fetch as _fetch


def _pool() -> redis.ConnectionPool:
    return redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=CONCURRENCY + 50, timeout=30)


class Progress(Middleware):
    """Counts after the Results middleware has stored the result.

    Dramatiq runs ``after_*`` hooks in reverse order, so this middleware is
    the first in the list: its ``after_process_message`` runs last.

    Ready is ``before_worker_boot``: Dramatiq's consumers and worker threads
    start, and take messages, before ``after_worker_boot`` is emitted."""

    def before_worker_boot(self, broker, worker):
        progress.ready()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        progress.task_done(failed=exception is not None)


broker = RedisBroker(namespace=f"{RUN}-dramatiq", connection_pool=_pool(),
                     middleware=[Progress(), *(m() for m in default_middleware)])
result_backend = RedisBackend(namespace=f"{RUN}-dramatiq-results", use_namespace_prefix_keys=True,
                              connection_pool=_pool())
if RESULTS:
    broker.add_middleware(Results(backend=result_backend))
dramatiq.set_broker(broker)


OPTIONS = {"store_results": True} if RESULTS else {}


@dramatiq.actor(queue_name=QUEUE, max_retries=0, **OPTIONS)
def fetch(url):
    return _fetch(url)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, **OPTIONS)
def noop():
    return None
