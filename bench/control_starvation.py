"""Control-plane starvation: does the worker answer while a task spins the CPU?

A worker with ``-P gevent -c 1000`` runs one task that holds the CPU
(``while`` loop, never yields) for ``--spin`` seconds (default 30).  Meanwhile
the stock Celery CLI runs ``celery inspect ping -d <node> -t 1`` ``--pings``
times (default 20), and a Celery EventReceiver records the worker's
heartbeats.  Same for greenq and for Celery 5.7's own gevent worker, same
Redis (DB 5), one invocation.

    .bench-venv/bin/python bench/control_starvation.py

Writes bench/results/control_starvation.json.  Keys and exchanges carry the
run prefix; workers run in their own process groups and are stopped by those ids.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)
REDIS_URL = "redis://127.0.0.1:6379/5"
RESULTS = os.path.join(ROOT, "bench", "results", "control_starvation.json")

WATCH = '''
import sys, time
from celery import Celery
url, exchange, node, path = sys.argv[1:5]
app = Celery("watch", broker=url)
app.conf.event_exchange = exchange
out = open(path, "a", buffering=1)
def beat(event):
    if event.get("hostname") == node:
        out.write(repr(time.time()) + "\\n")
with app.connection() as conn:
    app.events.Receiver(conn, handlers={"worker-heartbeat": beat}).capture(limit=None, timeout=None, wakeup=False)
'''

APP = '''
import os, time
RUN = os.environ["BENCH_RUN"]
def spin(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1
    return x
if os.environ["BENCH_SYSTEM"] == "greenq":
    from greenq import App
    app = App("starve", broker="{url}", backend="disabled://", task_default_queue=RUN + "-q",
              control_exchange=RUN + "-ctl", event_exchange=RUN + "-ev", worker_blocking_threshold=None)
else:
    from celery import Celery
    app = Celery("starve", broker="{url}")
    app.conf.update(task_default_queue=RUN + "-q", control_exchange=RUN + "-ctl", event_exchange=RUN + "-ev",
                    broker_connection_retry_on_startup=True, worker_send_task_events=False)
app.task(name="starve.spin")(spin)
'''


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(system: str, args: argparse.Namespace, workdir: str) -> dict:
    from celery import Celery

    run = f"starve-{system}-{uuid.uuid4().hex[:8]}"
    node = f"{run}@bench"
    env = {**os.environ, "PYTHONPATH": workdir + os.pathsep + ROOT, "BENCH_RUN": run, "BENCH_SYSTEM": system}
    if system == "greenq":
        argv = [os.path.join(BIN, "greenq"), "worker", "-A", "starve_app:app", "-P", "gevent", "-c", "1000",
                "-n", node, "-l", "WARNING"]
    else:
        argv = [os.path.join(BIN, "celery"), "-A", "starve_app:app", "worker", "-P", "gevent", "-c", "1000",
                "-n", node, "-l", "WARNING", "--without-gossip", "--without-mingle"]
    client = Celery("starve-client", broker=REDIS_URL)
    client.conf.update(control_exchange=f"{run}-ctl", event_exchange=f"{run}-ev", task_default_queue=f"{run}-q")
    # heartbeats are recorded by Celery's EventReceiver in a process of its own,
    # so nothing this driver does (running the CLI) can delay their receipt
    beats_path = os.path.join(workdir, f"{run}.beats")
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, REDIS_URL, f"{run}-ev", node, beats_path],
                               start_new_session=True)
    time.sleep(1.0)
    log = open(os.path.join(workdir, f"{run}.log"), "w")
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not client.control.ping(destination=[node], timeout=0.5):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{system} worker did not answer ping; log in {log.name}")
        time.sleep(3)  # a few heartbeats before the spin
        client.send_task("starve.spin", (args.spin,))
        time.sleep(1.0)
        spin_start = time.time()
        cli_env = {**env, "BENCH_SYSTEM": "celery"}  # the stock CLI loads the Celery app
        answered, latencies = 0, []
        for _ in range(args.pings):
            t0 = time.monotonic()
            out = subprocess.run([os.path.join(BIN, "celery"), "-A", "starve_app:app", "inspect", "ping", "-d", node,
                                  "-t", "1"], cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=60)
            elapsed = time.monotonic() - t0
            if "pong" in out.stdout:
                answered += 1
            # the CLI's own start-up is not the worker's answer: time the reply with the client too
            t1 = time.monotonic()
            reply = client.control.ping(destination=[node], timeout=1.0)
            if reply:
                latencies.append(time.monotonic() - t1)
            latencies_cli = elapsed
            if time.time() - spin_start > args.spin - 1:
                break
        spin_end = spin_start + args.spin - 1
        while time.time() < spin_end + 3:
            time.sleep(0.5)
        with open(beats_path) as f:
            beats = [float(line) for line in f if line.strip()]
        during = [t for t in beats if spin_start - 2 <= t <= spin_end]
        gaps = [b - a for a, b in zip(during, during[1:])]
        if during:
            gaps = [during[0] - (spin_start - 2)] + gaps + [spin_end - during[-1]]
        return {"system": system, "command": " ".join([os.path.basename(argv[0]), *argv[1:]]),
                "cli_pings": args.pings, "cli_answered": answered,
                "client_answered": len(latencies), "client_p50_ms": round(percentile(latencies, 0.5) * 1000, 1)
                if latencies else None, "client_p99_ms": round(percentile(latencies, 0.99) * 1000, 1)
                if latencies else None, "last_cli_seconds": round(latencies_cli, 2),
                "heartbeats_during_spin": len(during),
                "max_heartbeat_gap_s": round(max(gaps), 2) if gaps else None}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGTERM)
            watcher.wait(timeout=10)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="greenq,celery")
    parser.add_argument("--spin", type=float, default=45.0, help="seconds; room for 20 CLI start-ups")
    parser.add_argument("--pings", type=int, default=20)
    args = parser.parse_args()
    import tempfile
    workdir = tempfile.mkdtemp(prefix="greenq-starve-")
    with open(os.path.join(workdir, "starve_app.py"), "w") as f:
        f.write(APP.replace("{url}", REDIS_URL))
    records = []
    for system in args.systems.split(","):
        print(f"[{time.strftime('%H:%M:%S')}] {system} ...", flush=True)
        record = measure(system, args, workdir)
        print(json.dumps(record), flush=True)
        records.append(record)
    from importlib.metadata import version
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "versions": {n: version(n) for n in ("greenq", "celery", "kombu", "gevent")},
              "argv": sys.argv[1:], "results": records}
    previous = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            previous = json.load(f)
    previous.setdefault("runs", []).append(report)
    with open(RESULTS, "w") as f:
        json.dump(previous, f, indent=2)
    print(f"written to {os.path.relpath(RESULTS, ROOT)}; logs in {workdir}")


if __name__ == "__main__":
    main()
