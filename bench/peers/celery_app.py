"""Celery: ``celery -A bench.peers.celery_app worker -P gevent -c 1000 -Q <run>-q``
(with ``--without-gossip --without-mingle --without-heartbeat``, so that only
tasks are measured).  Everything else is Celery's default."""
from celery import Celery
from celery.signals import task_postrun, worker_ready

from bench.peers.common import QUEUE, REDIS_URL, RESULTS, RUN, progress
from bench.peers.common import fetch as _fetch

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL if RESULTS else None)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=not RESULTS,
    result_backend_transport_options={"global_keyprefix": f"{RUN}-"},
    control_exchange=f"{RUN}-ctl",
    event_exchange=f"{RUN}-ev",
    broker_transport_options={"unacked_key": f"{RUN}-unacked", "unacked_index_key": f"{RUN}-unacked_index",
                              "unacked_mutex_key": f"{RUN}-unacked_mutex"},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def fetch(url):
    return _fetch(url)


@app.task
def noop():
    return None


@worker_ready.connect
def on_ready(sender=None, **kwargs):
    progress.ready()


@task_postrun.connect
def on_postrun(sender=None, state=None, **kwargs):
    progress.task_done(failed=state != "SUCCESS")
