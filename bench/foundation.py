"""The foundation benchmarks: io-fanout and no-op throughput, greenq against its peers.

Same workloads, same Redis (127.0.0.1:6379, DB 5), one invocation, configurations
interleaved (the order rotates every run), several runs, medians:

* **io-fanout**: N tasks (default 10,000), each an HTTP GET to a local server
  (``bench/httpserver.py``, its own process) that answers after 100 ms, on a
  worker with 1000 green threads that is already running; wall time from the
  first send to the last result stored.  Beside it the floor: the same
  fetches by plain gevent in one process (``bench/peers/floor.py``).
* **no-op throughput**: N no-op tasks (default 20,000) sent first, then one
  worker started; drain time from the worker's ready hook to the N-th task
  done, with results ignored and with results stored in Redis.

Systems: greenq (``-P gevent``), Celery 5.7 (``-P gevent``), Dramatiq
(``dramatiq-gevent -p 1``), Huey (``-k greenlet``); see ``bench/peers/`` for
each app and how "done" is detected.  Needs the bench virtualenv (from the
checkout root)::

    python3 -m venv .bench-venv && .bench-venv/bin/pip install -e '.[gevent,redis]' -r bench/requirements.txt
    .bench-venv/bin/python bench/foundation.py --runs 3

Every key and queue a configuration creates has its run prefix in the name and
is deleted after it; nothing is flushed.  Workers run in their own process
groups and are stopped by those ids.  Bounded: each configuration has a
deadline (``--deadline``) and is recorded as timed out past it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
REDIS_URL = "redis://127.0.0.1:6379/5"
SYSTEMS = ("greenq", "celery", "dramatiq", "huey")
BINDING_DEADLINES = "_kombu.binding_deadlines"  # kombu's index of binding expiries, shared by the database


def worker_argv(system: str, queue: str, run: str, concurrency: int) -> list[str]:
    if system == "greenq":
        return [os.path.join(BIN, "greenq"), "worker", "-A", "bench.peers.greenq_app:app", "-P", "gevent",
                "-c", str(concurrency), "-Q", queue, "-l", "WARNING", "-n", f"{run}@%h"]
    if system == "celery":
        return [os.path.join(BIN, "celery"), "-A", "bench.peers.celery_app", "worker", "-P", "gevent",
                "-c", str(concurrency), "-Q", queue, "-l", "WARNING", "-n", f"{run}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if system == "dramatiq":
        return [os.path.join(BIN, "dramatiq-gevent"), "bench.peers.dramatiq_app", "-p", "1",
                "-t", str(concurrency), "-Q", queue]
    if system == "huey":
        return [sys.executable, "-m", "bench.peers.huey_run", "bench.peers.huey_app.huey", "-k", "greenlet",
                "-w", str(concurrency), "-n", "-q"]
    raise ValueError(system)


def command_line(argv: list[str]) -> str:
    """For the report: the command without this machine's paths."""
    first = os.path.basename(argv[0])
    return " ".join(["python" if first.startswith("python") else first, *argv[1:]])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import redis
        self.args = args
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.redis.ping()
        self.tmp = tempfile.mkdtemp(prefix="greenq-bench-")
        self.server: subprocess.Popen | None = None
        self.port = 0
        self.serial = 0

    # ---------------------------------------------------------------- processes
    def env(self, run: str, results: bool, expected: int) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": ROOT, "BENCH_RUN": run, "BENCH_REDIS_URL": REDIS_URL,
                "BENCH_RESULTS": "1" if results else "0", "BENCH_EXPECTED": str(expected),
                "BENCH_CONCURRENCY": str(self.args.concurrency), "PYTHONUNBUFFERED": "1"}

    def start_server(self) -> None:
        self.server = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "httpserver.py"),
                                        "--delay", str(self.args.delay)],
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.server.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening"):
            raise SystemExit(f"the HTTP server did not start: {line!r}")
        self.port = int(line.split()[1])

    def server_stats(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__stats", timeout=10) as response:
            return json.loads(response.read())

    def server_capacity(self, seconds: float = 5.0) -> dict[str, Any]:
        """Requests/s the server answers to two cheap raw-socket clients (no delay)."""
        before = self.server_stats()
        argv = [sys.executable, os.path.join(ROOT, "bench", "httpserver.py"), "--load", str(self.port),
                "--connections", "100", "--seconds", str(seconds)]
        clients = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        answered = sum(int(c.communicate(timeout=seconds + 60)[0].strip()) for c in clients)
        after = self.server_stats()
        served = after["served"] - before["served"]
        return {"requests_per_second": round(answered / seconds),
                "server_cpu_us_per_request": round((after["cpu"] - before["cpu"]) / max(served, 1) * 1e6, 1)}

    def start_worker(self, system: str, run: str, results: bool, expected: int) -> tuple[subprocess.Popen, str]:
        argv = worker_argv(system, f"{run}-q", run, self.args.concurrency)
        log_path = os.path.join(self.tmp, f"{run}.log")
        log = open(log_path, "w")
        process = subprocess.Popen(argv, cwd=ROOT, env=self.env(run, results, expected), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return process, log_path

    def stop_worker(self, process: subprocess.Popen) -> None:
        """SIGTERM to the worker's own process group, SIGKILL if it is still there after 20 s."""
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        except ProcessLookupError:
            pass

    def wait_marker(self, run: str, name: str, deadline: float, process: subprocess.Popen | None = None,
                    log_path: str | None = None) -> dict[str, Any] | None:
        key = f"{run}:{name}"
        while time.monotonic() < deadline:
            value = self.redis.get(key)
            if value is not None:
                return json.loads(value)
            if process is not None and process.poll() is not None:
                tail = open(log_path).read()[-3000:] if log_path else ""
                raise RuntimeError(f"worker exited with {process.returncode}:\n{tail}")
            time.sleep(0.02)
        return None

    def client(self, command: str, system: str, workload: str, run: str, results: bool, expected: int,
               *extra: str) -> tuple[dict[str, Any], float]:
        """Run bench.peers.client; returns its JSON and the CPU seconds it used."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, "-m", "bench.peers.client", command, system, workload, *extra],
                              cwd=ROOT, env=self.env(run, results, expected), capture_output=True, text=True,
                              timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"client {command} {system} failed:\n{done.stderr[-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return json.loads(done.stdout.strip().splitlines()[-1]), cpu

    def cleanup(self, run: str) -> int:
        """Delete every key whose name has this run's prefix, and this run's
        exchanges from kombu's shared ``_kombu.binding_deadlines`` index
        (Redis drops the key itself once it is empty)."""
        keys = list(self.redis.scan_iter(match=f"*{run}*", count=1000))
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start:start + 500])
        members = [m for m, _ in self.redis.zscan_iter(BINDING_DEADLINES, match=f"*{run}*")]
        if members:
            self.redis.zrem(BINDING_DEADLINES, *members)
        return len(keys)

    def new_run(self, tag: str) -> str:
        self.serial += 1
        return f"bench-{os.getpid()}-{self.serial}-{tag}"

    # ---------------------------------------------------------------- workloads
    def floor(self) -> dict[str, Any]:
        n = self.args.fanout_tasks
        url = f"http://127.0.0.1:{self.port}/floor"
        before = self.server_stats()
        load = os.getloadavg()[0]
        done = subprocess.run([sys.executable, "-m", "bench.peers.floor", str(n), url, str(self.args.concurrency)],
                              cwd=ROOT, env=self.env("floor", False, n), capture_output=True, text=True,
                              timeout=self.args.deadline)
        if done.returncode != 0:
            raise RuntimeError(f"floor failed:\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        after = self.server_stats()
        return {"system": "floor", "workload": "io-fanout", "results": False, "loadavg": load,
                "seconds": out["end"] - out["start"], "ok": out["ok"], "tasks": n,
                "worker_cpu_us_per_task": out["cpu"] / n * 1e6,
                "server_cpu_seconds": after["cpu"] - before["cpu"]}

    def fanout(self, system: str) -> dict[str, Any]:
        n = self.args.fanout_tasks
        run = self.new_run(f"{system}-fanout")
        url = f"http://127.0.0.1:{self.port}/{run}"
        ids = os.path.join(self.tmp, f"{run}.ids")
        record: dict[str, Any] = {"system": system, "workload": "io-fanout", "results": True, "tasks": n}
        process, log_path = self.start_worker(system, run, True, n)
        try:
            ready = self.wait_marker(run, "ready", time.monotonic() + 60, process, log_path)
            if ready is None:
                raise RuntimeError(f"{system} worker not ready after 60 s:\n{open(log_path).read()[-3000:]}")
            time.sleep(1.0)  # let every green thread / consumer settle before the clock starts
            record["loadavg"] = os.getloadavg()[0]
            before = self.server_stats()
            sent, send_cpu = self.client("send", system, "fetch", run, True, n, str(n), url, ids)
            done = self.wait_marker(run, "done", time.monotonic() + self.args.deadline, process, log_path)
            after = self.server_stats()
            record.update(send_seconds=sent["last_send"] - sent["first_send"], send_cpu_seconds=send_cpu,
                          server_cpu_seconds=after["cpu"] - before["cpu"])
            if done is None:
                record.update(timed_out=True, progress=int(self.redis.get(f"{run}:progress") or 0))
            else:
                record.update(seconds=done["at"] - sent["first_send"], errors=done["errors"],
                              worker_cpu_us_per_task=(done["cpu"] - ready["cpu"]) / n * 1e6)
                checked, _ = self.client("verify", system, "fetch", run, True, n, ids)
                record.update(ok=checked["ok"], bad_sample=checked["bad_sample"])
        finally:
            self.stop_worker(process)
            record["keys_deleted"] = self.cleanup(run)
        return record

    def noop(self, system: str, results: bool) -> dict[str, Any]:
        n = self.args.noop_tasks
        run = self.new_run(f"{system}-noop{'-r' if results else ''}")
        ids = os.path.join(self.tmp, f"{run}.ids")
        record: dict[str, Any] = {"system": system, "workload": "noop", "results": results, "tasks": n}
        process = None
        try:
            sent, send_cpu = self.client("send", system, "noop", run, results, n, str(n), "-", ids)
            record.update(send_seconds=sent["last_send"] - sent["first_send"], send_cpu_seconds=send_cpu)
            record["loadavg"] = os.getloadavg()[0]
            process, log_path = self.start_worker(system, run, results, n)
            deadline = time.monotonic() + 60 + self.args.deadline
            ready = self.wait_marker(run, "ready", deadline, process, log_path)
            done = self.wait_marker(run, "done", deadline, process, log_path) if ready else None
            if done is None or ready is None:
                record.update(timed_out=True, progress=int(self.redis.get(f"{run}:progress") or 0))
            else:
                seconds = done["at"] - ready["at"]
                record.update(seconds=seconds, tasks_per_second=n / seconds, errors=done["errors"],
                              first_done_after=done["first"] - ready["at"] if done["first"] else None,
                              worker_cpu_us_per_task=(done["cpu"] - ready["cpu"]) / n * 1e6)
                if results:
                    checked, _ = self.client("verify", system, "noop", run, results, n, ids)
                    record.update(ok=checked["ok"], bad_sample=checked["bad_sample"])
        finally:
            if process is not None:
                self.stop_worker(process)
            record["keys_deleted"] = self.cleanup(run)
        return record


def configurations(args: argparse.Namespace) -> list[tuple[str, str, bool]]:
    systems = args.systems.split(",")
    configs: list[tuple[str, str, bool]] = []
    for workload in args.workloads.split(","):
        if workload == "io-fanout":
            configs += [("io-fanout", "floor", False)] + [("io-fanout", s, True) for s in systems]
        elif workload == "noop":
            configs += [("noop", s, r) for r in (False, True) for s in systems]
        else:
            raise SystemExit(f"unknown workload {workload!r}")
    return configs


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(f"{r['workload']}/{r['system']}/{'results' if r['results'] else 'ignored'}", []).append(r)
    summary = {}
    for key, rs in groups.items():
        finished = [r for r in rs if not r.get("timed_out")]
        seconds = [r["seconds"] for r in finished]
        cpu = [r["worker_cpu_us_per_task"] for r in finished if r.get("worker_cpu_us_per_task")]
        summary[key] = {
            "runs": len(rs), "timed_out": len(rs) - len(finished),
            "median_seconds": statistics.median(seconds) if seconds else None,
            "min_seconds": min(seconds) if seconds else None, "max_seconds": max(seconds) if seconds else None,
            "median_tasks_per_second": statistics.median(r["tasks"] / r["seconds"] for r in finished) if seconds else None,
            "median_worker_cpu_us_per_task": statistics.median(cpu) if cpu else None,
            "results_ok": [r.get("ok") for r in rs], "errors": [r.get("errors") for r in rs],
            "loadavg": [round(r["loadavg"], 2) for r in rs],
        }
    return summary


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    lines = []
    floor = summary.get("io-fanout/floor/ignored", {}).get("median_seconds")
    if any(k.startswith("io-fanout/") for k in summary):
        lines += ["| io-fanout | median wall (s) | range (s) | x floor | worker CPU/task (ms) | results ok |",
                  "|---|---:|---:|---:|---:|---|"]
        for key, s in summary.items():
            if not key.startswith("io-fanout/") or s["median_seconds"] is None:
                continue
            ratio = f"{s['median_seconds'] / floor:.2f}" if floor else "-"
            lines.append(f"| {key.split('/')[1]} | {s['median_seconds']:.2f} | {s['min_seconds']:.2f}-"
                         f"{s['max_seconds']:.2f} | {ratio} | {s['median_worker_cpu_us_per_task'] / 1000:.2f} | "
                         f"{s['results_ok']} |")
    for mode in ("ignored", "results"):
        rows = {k: s for k, s in summary.items() if k.startswith("noop/") and k.endswith(mode)}
        if not rows:
            continue
        best = max((s["median_tasks_per_second"] or 0) for s in rows.values())
        lines += ["", f"| no-op, results {mode} | median tasks/s | range (s) | vs best | worker CPU/task (us) |",
                  "|---|---:|---:|---:|---:|"]
        for key, s in rows.items():
            if s["median_seconds"] is None:
                lines.append(f"| {key.split('/')[1]} | timed out | | | |")
                continue
            lines.append(f"| {key.split('/')[1]} | {s['median_tasks_per_second']:.0f} | {s['min_seconds']:.2f}-"
                         f"{s['max_seconds']:.2f} | {s['median_tasks_per_second'] / best:.2f} | "
                         f"{s['median_worker_cpu_us_per_task']:.0f} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import version
    names = ("greenq", "celery", "kombu", "dramatiq", "huey", "gevent", "greenlet", "redis", "requests", "urllib3")
    found = {name: version(name) for name in names}
    import redis
    found["redis-server"] = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    found["python"] = platform.python_version()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="io-fanout,noop")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--fanout-tasks", type=int, default=10_000)
    parser.add_argument("--noop-tasks", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=0.1, help="the server's answer delay (s)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds one configuration may take")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "foundation.json"))
    args = parser.parse_args()
    bench = Bench(args)
    configs = configurations(args)
    started = datetime.now(timezone.utc)
    meta: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[1:],
                            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
                            "versions": versions(),
                            "worker_commands": {s: command_line(worker_argv(s, "<run>-q", "<run>", args.concurrency))
                                                for s in args.systems.split(",")}}
    records: list[dict[str, Any]] = []
    needs_server = any(w == "io-fanout" for w, _, _ in configs)
    try:
        if needs_server:
            bench.start_server()
            meta["server_capacity"] = bench.server_capacity()
            print(f"server capacity: {meta['server_capacity']}", file=sys.stderr, flush=True)
        for run in range(args.runs):
            shift = run % len(configs)
            for workload, system, results in configs[shift:] + configs[:shift]:
                if workload == "io-fanout":
                    record = bench.floor() if system == "floor" else bench.fanout(system)
                else:
                    record = bench.noop(system, results)
                record["run"] = run + 1
                records.append(record)
                figure = (f"{record['seconds']:.2f}s" if "seconds" in record else f"TIMED OUT at {record.get('progress')}")
                rate = f" {record['tasks_per_second']:.0f}/s" if "tasks_per_second" in record else ""
                print(f"run {run + 1} {workload} {system} results={results}: {figure}{rate} "
                      f"(load {record['loadavg']:.2f}, ok {record.get('ok')}, "
                      f"cpu/task {record.get('worker_cpu_us_per_task', 0):.0f}us)", file=sys.stderr, flush=True)
    finally:
        if bench.server is not None:
            os.killpg(bench.server.pid, signal.SIGTERM)
            bench.server.wait(timeout=10)
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["loadavg_end"] = os.getloadavg()
    summary = summarize(records)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "summary": summary, "records": records}, f, indent=1, default=repr)
    print(markdown(summary))


if __name__ == "__main__":
    main()
