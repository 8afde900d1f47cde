"""Tasks for the prefork pool and the CPU offload tests."""
from __future__ import annotations

import os
import signal
import time

from greenq import App, signals
from greenq.exceptions import SoftTimeLimitExceeded

app = App(
    "mixed",
    task_default_queue=os.environ.get("GREENQ_TEST_QUEUE", "celery"),
    control_exchange=os.environ.get("GREENQ_TEST_CONTROL_EXCHANGE", "celery"),
    result_expires=3600,
)

CPU_QUEUE = os.environ.get("GREENQ_TEST_QUEUE", "celery") + "-cpu"
app.conf.task_queues = [os.environ.get("GREENQ_TEST_QUEUE", "celery"), CPU_QUEUE]

_initialised_in: list[int] = []


@signals.worker_process_init.connect
def _remember_init(sender=None, **kwargs):
    _initialised_in.append(os.getpid())


@app.task
def add(x, y):
    return x + y


@app.task
def pid():
    """The pid of the process that ran the task."""
    return os.getpid()


@app.task
def initialised():
    """Whether worker_process_init fired in the process running this task."""
    return {"pid": os.getpid(), "init_pids": list(_initialised_in)}


@app.task
def die(how="kill"):
    """End the process running the task, as a segfault or the OOM killer would."""
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_once(marker):
    """Kill its process the first time (marker file absent); succeed when run again."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return "second run"


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(time_limit=1.0)
def sleep_past_limit(seconds):
    time.sleep(seconds)  # an unpatched C-level sleep: only killing the process stops it
    return "not stopped"


@app.task(time_limit=3.0, soft_time_limit=0.5)
def soft_limited(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


_hoard: list[bytes] = []


@app.task
def hoard(megabytes):
    """Keep ``megabytes`` of memory alive in the process; returns its pid."""
    _hoard.append(b"x" * (megabytes * 1024 * 1024))
    return os.getpid()


def _spin(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:  # pure Python: never yields to the hub
        n += 1
    return n


@app.task(cpu=True)
def crunch(seconds):
    """CPU-bound: with --cpu-pool it runs in a child process."""
    _spin(seconds)
    return os.getpid()


@app.task
def crunch_here(seconds):
    """The same work, not declared CPU-bound (runs in the worker's own slots)."""
    _spin(seconds)
    return os.getpid()


@app.task(cpu=True, time_limit=1.0)
def crunch_forever():
    _spin(3600)


@app.task
def io_wait(seconds, sent_at):
    """An I/O-bound task: waits, then says when it finished and where it ran."""
    time.sleep(seconds)  # patched under gevent: yields
    return {"finished_at": time.time(), "sent_at": sent_at, "pid": os.getpid()}


@app.task
def niceness():
    """The scheduling niceness of the process running the task."""
    return os.nice(0)
