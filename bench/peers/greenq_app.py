"""greenq: ``greenq worker -A bench.peers.greenq_app:app -P gevent -c 1000 -Q <run>-q``."""
from bench.peers.common import QUEUE, REDIS_URL, RESULTS, RUN, progress
from bench.peers.common import fetch as _fetch
from greenq import App, signals

app = App(
    "bench",
    broker=REDIS_URL,
    backend=REDIS_URL if RESULTS else "disabled://",
    task_default_queue=QUEUE,
    task_ignore_result=not RESULTS,
    result_namespace=f"{RUN}-celery",               # keys <run>-celery-task-meta-<id>
    control_exchange=f"{RUN}-ctl",
    event_exchange=f"{RUN}-ev",
    broker_transport_options={"unacked_key": f"{RUN}-unacked", "unacked_index_key": f"{RUN}-unacked_index",
                              "unacked_mutex_key": f"{RUN}-unacked_mutex"},
)


@app.task
def fetch(url):
    return _fetch(url)


@app.task
def noop():
    return None


@signals.worker_ready.connect
def on_ready(sender=None, **kwargs):
    progress.ready()


@signals.task_postrun.connect
def on_postrun(sender=None, state=None, **kwargs):
    progress.task_done(failed=state != "SUCCESS")
