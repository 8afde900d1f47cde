"""greenq in one command: start a worker, send it tasks, print the results.

    python examples/demo.py

Uses the embedded default (no Redis, no RabbitMQ): the worker and this
script share a data directory.  The worker runs 500 green threads
(``-P gevent -c 500``) when gevent is installed, else 50 OS threads.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PAGES = 500


def start_worker(home: str, pool: str, concurrency: int, log: object) -> subprocess.Popen:
    env = {**os.environ, "GREENQ_HOME": home,
           "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GREENQ_BROKER_URL", None)
    env.pop("GREENQ_RESULT_BACKEND", None)
    return subprocess.Popen(
        [sys.executable, "-m", "greenq", "worker", "-A", "demo_tasks", "-P", pool, "-c", str(concurrency),
         "-l", "INFO"], env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)


def main() -> int:
    home = tempfile.mkdtemp(prefix="greenq-demo-")
    os.environ["GREENQ_HOME"] = home  # the client side uses the same data directory
    sys.path.insert(0, HERE)
    from demo_tasks import add, divide, fetch

    pool, concurrency = ("gevent", PAGES) if importlib.util.find_spec("gevent") else ("threads", 50)
    log_path = os.path.join(home, "worker.log")
    print(f"starting a worker: greenq worker -A demo_tasks -P {pool} -c {concurrency}", flush=True)
    log = open(log_path, "w")
    worker = start_worker(home, pool, concurrency, log)
    try:
        print(f"add.delay(2, 2).get() -> {add.delay(2, 2).get(timeout=30)}", flush=True)

        started = time.monotonic()
        results = [fetch.delay(page) for page in range(PAGES)]
        pages = [r.get(timeout=120) for r in results]
        elapsed = time.monotonic() - started
        print(f"{PAGES} fetch tasks of 0.2 s each: {elapsed:.1f} s in one worker "
              f"({PAGES * 0.2:.0f} s if run one after another); first: {pages[0]!r}")

        failed = divide.delay(1, 0)
        try:
            failed.get(timeout=30)
        except ZeroDivisionError as exc:
            print(f"divide.delay(1, 0).get() raised {type(exc).__name__}: {exc} (state {failed.state})")
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown
        code = worker.wait(30)
        log.close()
    print(f"worker stopped (exit {code}); its log: {log_path}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
