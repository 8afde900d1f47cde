"""greenq for bench/scheduling.py: ``greenq worker -A bench.peers.sched_greenq:app -P gevent -c 1000``."""
from bench.peers.sched_common import QUEUE, RATE, REDIS_URL, RUN, TRANSPORT_OPTIONS, ready, record_limited, record_stamp
from greenq import App, signals

app = App("sched", broker=REDIS_URL, backend="disabled://", task_default_queue=QUEUE, task_ignore_result=True,
          control_exchange=f"{RUN}-ctl", event_exchange=f"{RUN}-ev", broker_transport_options=TRANSPORT_OPTIONS,
          eta_parking_prefix=f"{RUN}-eta:")


@app.task(bind=True)
def stamp(self, eta):
    record_stamp(self.request.id, eta)


@app.task(rate_limit=RATE)
def limited():
    record_limited()


@signals.worker_ready.connect
def on_ready(sender=None, **kwargs):
    ready()
