"""The scheduling benchmarks: ETA lateness, far-future ETAs, rate-limit accuracy.

greenq ``-P gevent -c 1000`` against Celery 5.7 ``-P gevent -c 1000`` on the
same Redis (127.0.0.1:6379, DB 5), in one invocation, one after the other:

* **lateness**: N tasks (default 5,000) with countdowns spread evenly over
  0-5 s, sent to a running worker; each task records how late it started
  against its ETA.  p50 / p99 / max.
* **far-future**: with a 60 s Redis visibility timeout, M tasks (default
  5,000) due in 150 s, then F tasks (default 100,000) due in two hours;
  the worker's RSS is sampled for 200 s, by which time the 150 s tasks have
  run: how many ran more than once, and how many messages the worker holds
  unacked.
* **rate**: R tasks (default 1,500) of a task limited to ``--rate``
  (default 20/s) queued at once; the completions in the first 60 s after the
  first one, as a rate, against the limit.

Needs the bench virtualenv (see bench/requirements.txt), from the checkout root::

    .bench-venv/bin/python bench/scheduling.py            # both systems, every workload
    .bench-venv/bin/python bench/scheduling.py --systems greenq --workloads rate

Keys and queues carry the run prefix and are deleted afterwards; nothing is
flushed.  Workers run in their own process groups and are stopped by those ids.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)
REDIS_URL = "redis://127.0.0.1:6379/5"
RESULTS = os.path.join(ROOT, "bench", "results", "scheduling.json")


def worker_argv(system: str, queue: str, run: str) -> list[str]:
    if system == "greenq":
        return [os.path.join(BIN, "greenq"), "worker", "-A", "bench.peers.sched_greenq:app", "-P", "gevent",
                "-c", "1000", "-Q", queue, "-l", "WARNING", "-n", f"{run}@%h"]
    return [os.path.join(BIN, "celery"), "-A", "bench.peers.sched_celery", "worker", "-P", "gevent", "-c", "1000",
            "-Q", queue, "-l", "WARNING", "-n", f"{run}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def command_line(argv: list[str]) -> str:
    first = os.path.basename(argv[0])
    return " ".join([first, *argv[1:]])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Run:
    """One worker of one system, with its own key prefix."""

    def __init__(self, system: str, vt: float, rate: str, tmp: str) -> None:
        import redis

        self.system = system
        self.run = f"sched-{system}-{uuid.uuid4().hex[:8]}"
        self.queue = f"{self.run}-q"
        self.redis = redis.Redis.from_url(REDIS_URL)
        env = {**os.environ, "PYTHONPATH": ROOT, "BENCH_RUN": self.run, "BENCH_REDIS_URL": REDIS_URL,
               "BENCH_VT": str(vt), "BENCH_RATE": rate, "PYTHONUNBUFFERED": "1"}
        os.environ.update({k: env[k] for k in ("BENCH_RUN", "BENCH_VT", "BENCH_RATE", "BENCH_REDIS_URL")})
        self.argv = worker_argv(system, self.queue, self.run)
        self.log_path = os.path.join(tmp, f"{self.run}.log")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.redis.get(f"{self.run}:ready"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"{system} worker did not start; log: {self.log_path}")
            time.sleep(0.1)
        self.client = self._client(vt)

    def _client(self, vt: float) -> Any:
        from greenq import App
        return App("sched-client", broker=REDIS_URL, backend="disabled://", task_default_queue=self.queue,
                   broker_transport_options={"visibility_timeout": vt})

    def send(self, name: str, args: tuple = (), **options: Any) -> None:
        self.client.send_task(f"bench.peers.sched_greenq.{name}", args, **options)

    def stamps(self) -> list[tuple[str, float]]:
        return [tuple(json.loads(raw)) for raw in self.redis.lrange(f"{self.run}-stamps", 0, -1)]

    def held(self) -> dict[str, int]:
        return {"unacked": int(self.redis.hlen(f"{self.run}-unacked")),
                "queued": int(self.redis.llen(self.queue)),
                "parked": int(self.redis.zcard(f"{self.run}-eta:due"))}

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
            except ProcessLookupError:
                pass
        self.client.close()
        keys = list(self.redis.scan_iter(f"{self.run}*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start:start + 500])
        for key in (f"_kombu.binding.{self.queue}", f"_kombu.binding.{self.run}-ctl",
                    f"_kombu.binding.{self.run}-ev"):
            self.redis.delete(key)


def lateness(system: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    run = Run(system, 3600, args.rate, tmp)
    try:
        n = args.lateness_n
        now = time.time()
        for i in range(n):
            eta = now + 5.0 * i / n + 1.0  # spread over 5 s, starting 1 s out (sending takes about 1 s)
            run.send("stamp", (eta,), eta=datetime.fromtimestamp(eta, timezone.utc))
        deadline = time.monotonic() + 60
        while run.redis.llen(f"{run.run}-stamps") < n and time.monotonic() < deadline:
            time.sleep(0.2)
        late = [value for _, value in run.stamps()]
        return {"system": system, "command": command_line(run.argv), "tasks": n, "ran": len(late),
                "p50_ms": round(percentile(late, 0.5) * 1000, 1), "p99_ms": round(percentile(late, 0.99) * 1000, 1),
                "max_ms": round(max(late) * 1000, 1), "early": sum(1 for v in late if v < -0.001)}
    finally:
        run.stop()


def far_future(system: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    run = Run(system, 60, args.rate, tmp)
    try:
        start_rss = rss_mib(run.process.pid)
        soon_at = time.time() + args.soon_countdown
        for _ in range(args.soon_n):
            run.send("stamp", (soon_at,), eta=datetime.fromtimestamp(soon_at, timezone.utc))
        far_at = time.time() + 7200
        sent_start = time.monotonic()
        for _ in range(args.far_n):
            run.send("stamp", (far_at,), eta=datetime.fromtimestamp(far_at, timezone.utc))
        send_seconds = time.monotonic() - sent_start
        samples = []
        observe_end = time.monotonic() + args.observe
        while time.monotonic() < observe_end and run.process.poll() is None:
            samples.append(round(rss_mib(run.process.pid), 1))
            time.sleep(5)
        stamps = run.stamps()
        runs = Counter(task_id for task_id, _ in stamps)
        alive = run.process.poll() is None
        return {"system": system, "command": command_line(run.argv), "soon": args.soon_n, "far": args.far_n,
                "send_seconds": round(send_seconds, 1), "rss_start_mib": round(start_rss, 1),
                "rss_max_mib": max(samples) if samples else None, "rss_end_mib": samples[-1] if samples else None,
                "soon_ran": len(runs), "ran_more_than_once": sum(1 for c in runs.values() if c > 1),
                "extra_runs": sum(c - 1 for c in runs.values()), "held_at_end": run.held(), "worker_alive": alive}
    finally:
        run.stop()


def rate(system: str, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    run = Run(system, 3600, args.rate, tmp)
    try:
        for _ in range(args.rate_n):
            run.send("limited")
        key = f"{run.run}-limited"
        deadline = time.monotonic() + args.rate_window + 30
        while time.monotonic() < deadline:
            first = run.redis.lindex(key, 0)
            if first is not None and time.time() > float(first) + args.rate_window + 1:
                break
            time.sleep(0.5)
        times = sorted(float(t) for t in run.redis.lrange(key, 0, -1))
        window = [t for t in times if t < times[0] + args.rate_window] if times else []
        from greenq.ratelimit import parse_rate
        limit = parse_rate(args.rate) or 0.0
        observed = len(window) / args.rate_window
        return {"system": system, "command": command_line(run.argv), "limit_per_s": limit,
                "window_s": args.rate_window, "completed_in_window": len(window),
                "observed_per_s": round(observed, 2), "error_pct": round((observed - limit) / limit * 100, 2)}
    finally:
        run.stop()


WORKLOADS = {"lateness": lateness, "far-future": far_future, "rate": rate}


def versions() -> dict[str, str]:
    from importlib.metadata import version
    return {name: version(name) for name in ("greenq", "celery", "kombu", "gevent", "redis")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="greenq,celery")
    parser.add_argument("--workloads", default="lateness,far-future,rate")
    parser.add_argument("--lateness-n", type=int, default=5000)
    parser.add_argument("--soon-n", type=int, default=5000)
    parser.add_argument("--soon-countdown", type=float, default=150.0)
    parser.add_argument("--far-n", type=int, default=100_000)
    parser.add_argument("--observe", type=float, default=200.0, help="seconds the far-future worker is watched")
    parser.add_argument("--rate", default="20/s")
    parser.add_argument("--rate-n", type=int, default=1500)
    parser.add_argument("--rate-window", type=float, default=60.0)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="greenq-sched-")
    results: dict[str, list[dict[str, Any]]] = {}
    for workload in args.workloads.split(","):
        for system in args.systems.split(","):
            print(f"[{time.strftime('%H:%M:%S')}] {workload} on {system} ...", flush=True)
            record = WORKLOADS[workload](system, args, tmp)
            print(json.dumps(record), flush=True)
            results.setdefault(workload, []).append(record)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "versions": versions(), "argv": sys.argv[1:], "results": results}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    previous = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            previous = json.load(f)
    previous.setdefault("runs", []).append(report)
    with open(RESULTS, "w") as f:
        json.dump(previous, f, indent=2)
    print(f"written to {os.path.relpath(RESULTS, ROOT)}; worker logs in {tmp}")
    for workload, records in results.items():
        print(f"\n{workload}:")
        for record in records:
            print("  " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "command"))


if __name__ == "__main__":
    main()
