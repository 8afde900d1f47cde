"""Celery for bench/scheduling.py: ``celery -A bench.peers.sched_celery worker -P gevent -c 1000``
(with ``--without-gossip --without-mingle --without-heartbeat``); otherwise Celery's defaults."""
from celery import Celery
from celery.signals import worker_ready

from bench.peers.sched_common import QUEUE, RATE, REDIS_URL, RUN, TRANSPORT_OPTIONS, ready, record_limited, record_stamp

app = Celery("sched", broker=REDIS_URL)
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True, control_exchange=f"{RUN}-ctl",
                event_exchange=f"{RUN}-ev", broker_transport_options=TRANSPORT_OPTIONS,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(bind=True, name="bench.peers.sched_greenq.stamp")
def stamp(self, eta):
    record_stamp(self.request.id, eta)


@app.task(rate_limit=RATE, name="bench.peers.sched_greenq.limited")
def limited():
    record_limited()


@worker_ready.connect
def on_ready(sender=None, **kwargs):
    ready()
