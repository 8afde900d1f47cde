"""Tasks for bench/offload_latency.py."""
from __future__ import annotations

import os
import time

from greenq import App

app = App("offload_bench", task_default_queue=os.environ.get("BENCH_QUEUE", "offload-bench"), result_expires=900,
          worker_cpu_pool_nice=int(os.environ.get("BENCH_CPU_NICE", "10")))


@app.task
def io_task(sent_at: float, wait: float) -> dict:
    """An I/O-bound task: waits (a green sleep under gevent), then says when it finished."""
    time.sleep(wait)
    return {"sent_at": sent_at, "finished_at": time.time()}


def _spin(seconds: float) -> int:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:   # pure Python: never yields
        n += 1
    return n


@app.task(cpu=True)
def cpu_task(seconds: float, sent_at: float) -> dict:
    """CPU-bound, declared so: runs in the worker's --cpu-pool."""
    _spin(seconds)
    return {"sent_at": sent_at, "finished_at": time.time()}


@app.task
def cpu_task_inline(seconds: float, sent_at: float) -> dict:
    """The same work not declared CPU-bound: runs on the hub (the control case)."""
    _spin(seconds)
    return {"sent_at": sent_at, "finished_at": time.time()}


def spin_outside(seconds: float, every: float, duration: float) -> None:
    """The same CPU work in a process that has nothing to do with the worker."""
    end = time.time() + duration
    due = time.time()
    while time.time() < end:
        _spin(seconds)
        due += every
        time.sleep(max(0.0, due - time.time()))
