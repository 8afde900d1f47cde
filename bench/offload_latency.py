"""I/O-task latency in a green worker, with and without CPU tasks running through the offload.

    greenq worker -A bench.offload_app -P gevent -c 1000 --cpu-pool 1

The client sends I/O tasks (each waits ``--io-wait`` seconds on a green
thread) at ``--io-rate`` per second for ``--seconds``; latency is the time
from sending to the task finishing (both clocks on this machine).  Phases:

    io-only      I/O tasks alone (the CPU pool is idle)
    io+offload   the same, plus CPU tasks (``cpu=True``, ``--cpu-ms`` of pure
                 Python each, ``--cpu-rate`` per second) that run in the CPU pool
    io+outside   the same CPU load from a process unrelated to the worker: what
                 sharing the machine's cores costs, whoever does the work
    io+inline    control: the same CPU work *not* declared CPU-bound, so it runs
                 on the hub between the I/O tasks

io-only, io+offload and io+outside alternate ``--runs`` times on one worker
(each phase waits for its CPU tasks to finish); io+inline runs once at the
end.  The issue's bar: the p99 of io+offload is within 20% of io-only.
Results and how to read them: docs/feedhub-benchmark.md.  Run by hand:

    python bench/offload_latency.py --broker redis://127.0.0.1:6379/4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def phase(app, name: str, args: argparse.Namespace) -> dict:
    from bench.offload_app import cpu_task, cpu_task_inline, io_task
    cpu = {"io-only": None, "io+offload": cpu_task, "io+inline": cpu_task_inline, "io+outside": None}[name]
    outside = None
    if name == "io+outside":   # the same CPU load, from a process unrelated to the worker
        code = (f"from bench.offload_app import spin_outside; "
                f"spin_outside({args.cpu_ms / 1000.0}, {1.0 / args.cpu_rate}, {args.seconds})")
        outside = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    io_every = 1.0 / args.io_rate
    cpu_every = 1.0 / args.cpu_rate
    start = time.time()
    next_io, next_cpu = start, start
    results, cpu_results = [], []
    while True:
        now = time.time()
        if now - start >= args.seconds:
            break
        if now >= next_io:
            results.append(io_task.apply_async((now, args.io_wait)))
            next_io += io_every
        if cpu is not None and now >= next_cpu:
            cpu_results.append(cpu.apply_async((args.cpu_ms / 1000.0, now)))
            next_cpu += cpu_every
        time.sleep(max(0.0, min(next_io, next_cpu if cpu else next_io) - time.time()))
    values = []
    for result in results:
        meta = result.get(timeout=300)
        if meta["sent_at"] - start >= args.warmup:
            values.append((meta["finished_at"] - meta["sent_at"]) * 1000.0)
    cpu_values = [(m["finished_at"] - m["sent_at"]) * 1000.0 for m in (r.get(timeout=300) for r in cpu_results)]
    if outside is not None:
        outside.wait(60)
    return {"phase": name, "io_tasks": len(values), "cpu_tasks": len(cpu_results),
            "p50_ms": round(percentile(values, 50), 1), "p90_ms": round(percentile(values, 90), 1),
            "p99_ms": round(percentile(values, 99), 1), "max_ms": round(max(values), 1),
            "cpu_p50_ms": round(percentile(cpu_values, 50), 1) if cpu_values else None,
            "loadavg": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--cpu-pool", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--io-rate", type=float, default=200.0, help="I/O tasks per second")
    parser.add_argument("--io-wait", type=float, default=0.02, help="seconds each I/O task waits")
    parser.add_argument("--cpu-rate", type=float, default=25.0, help="CPU tasks per second")
    parser.add_argument("--cpu-ms", type=float, default=20.0, help="milliseconds of CPU per CPU task")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds at the start of a phase not counted")
    parser.add_argument("--nice", type=int, default=10, help="worker_cpu_pool_nice for the CPU pool")
    parser.add_argument("--runs", type=int, default=12,
                        help="short phases, many times, alternating: noise from other work on the machine "
                             "comes in bursts and so spreads over every phase")
    parser.add_argument("--json", default="bench/results/offload_latency.json")
    args = parser.parse_args()

    queue = f"offload-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": ROOT, "BENCH_QUEUE": queue, "GREENQ_BROKER_URL": args.broker,
           "GREENQ_RESULT_BACKEND": args.broker, "BENCH_CPU_NICE": str(args.nice)}
    os.environ.update({k: env[k] for k in ("BENCH_QUEUE", "GREENQ_BROKER_URL", "GREENQ_RESULT_BACKEND")})
    log = tempfile.NamedTemporaryFile(prefix="offload-bench-", suffix=".log", delete=False).name
    argv = [sys.executable, "-m", "greenq", "worker", "-A", "bench.offload_app", "-P", "gevent",
            "-c", str(args.concurrency), "--cpu-pool", str(args.cpu_pool), "-l", "WARNING", "-f", log]
    worker = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, ROOT)
    from bench.offload_app import app
    try:
        deadline = time.time() + 60
        while time.time() < deadline:   # the worker is ready when a task comes back
            try:
                app.send_task("bench.offload_app.io_task", (time.time(), 0.0)).get(timeout=2)
                break
            except Exception:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited; see {log}") from None
        started = datetime.now(timezone.utc)
        rows = []
        for run in range(args.runs):
            for name in ("io-only", "io+offload", "io+outside"):
                row = phase(app, name, args)
                row["run"] = run + 1
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
        control = phase(app, "io+inline", args)
        control["run"] = 1
        rows.append(control)
        print(control, file=sys.stderr, flush=True)
    finally:
        worker.terminate()
        worker.wait(30)
        app.close()
    with open(log) as f:
        problems = [line for line in f if re.search(r"ERROR|CRITICAL", line)]
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    meta = {"date": started.isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "worker": " ".join(argv[3:]), "args": vars(args), "worker_errors": problems[:10]}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "phases": rows}, f, indent=2)
    print(f"\n{meta['date']}, {meta['machine']}, Python {meta['python']}, broker {args.broker}")
    print(f"worker: greenq {meta['worker']} (CPU pool nice +{args.nice}); "
          f"I/O tasks {args.io_rate:.0f}/s waiting {args.io_wait * 1000:.0f} ms; "
          f"CPU tasks {args.cpu_rate:.0f}/s x {args.cpu_ms:.0f} ms; {args.seconds:.0f} s phases, "
          f"first {args.warmup:.1f} s not counted\n")
    print("| phase | run | I/O tasks | p50 ms | p90 ms | p99 ms | max ms | CPU task p50 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['phase']} | {row['run']} | {row['io_tasks']} | {row['p50_ms']} | {row['p90_ms']} | "
              f"{row['p99_ms']} | {row['max_ms']} | {row['cpu_p50_ms'] or '-'} | {row['loadavg']} |")
    median = {name: statistics.median(r["p99_ms"] for r in rows if r["phase"] == name)
              for name in ("io-only", "io+offload", "io+outside")}
    base = median["io-only"]
    print(f"\nmedian p99 over {args.runs} runs: io-only {base:.1f} ms, io+offload {median['io+offload']:.1f} ms "
          f"({(median['io+offload'] / base - 1) * 100:+.0f}%), io+outside {median['io+outside']:.1f} ms "
          f"({(median['io+outside'] / base - 1) * 100:+.0f}%), io+inline {control['p99_ms']:.1f} ms")
    by_run = {(r["run"], r["phase"]): r["p99_ms"] for r in rows}
    for name in ("io+offload", "io+outside"):
        ratios = [by_run[(run, name)] / by_run[(run, "io-only")] for run in range(1, args.runs + 1)]
        print(f"{name} / io-only p99, same run: median {statistics.median(ratios):.2f}, "
              f"runs within +20%: {sum(r <= 1.2 for r in ratios)} of {len(ratios)}")
    if problems:
        print(f"worker log had errors, e.g. {problems[0].strip()}")


if __name__ == "__main__":
    main()
