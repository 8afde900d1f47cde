"""Tasks for bench/offload_latency.py."""
from __future__ import annotations

import os
import time

from greenq import App

app = App("offload_bench", task_default_queue=os.environ.get("BENCH_QUEUE", "offload-bench"), result_expires=900)


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


@app.task(cpu=True, ignore_result=True)
def cpu_task(seconds: float) -> int:
    """CPU-bound, declared so: runs in the worker's --cpu-pool."""
    return _spin(seconds)


@app.task(ignore_result=True)
def cpu_task_inline(seconds: float) -> int:
    """The same work not declared CPU-bound: runs on the hub (the control case)."""
    return _spin(seconds)
