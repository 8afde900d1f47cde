"""Feeds per second for examples/feedhub: green threads against a prefork pool.

Reproduces the seeds' informal comparison ("the Eventlet pool could fetch and
process hundreds of feeds every second, while the multiprocessing pool spent
14 seconds processing 100 feeds"): the same feeds, from the same local feed
server (same latency, same documents), crawled by

    greenq worker -P gevent -c 1000 --cpu-pool 2   (fetch on green threads, parse in 2 processes)
    greenq worker -P prefork -c 2                  (fetch and parse in 2 processes)

Each configuration runs ``--runs`` times, interleaved, through the
``python -m examples.feedhub`` demo (embedded broker by default, or
``--broker redis://...``), with error injection off so that the figures are
throughput, not retry backoff.  Prints a Markdown table and writes the raw
summaries as JSON.  Run by hand (takes minutes):

    python bench/feedhub_throughput.py --feeds 500 --runs 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    "gevent-1000+cpu2": ["-P", "gevent", "-c", "1000", "--cpu-pool", "2"],
    "gevent-1000+cpu1": ["-P", "gevent", "-c", "1000", "--cpu-pool", "1"],
    "prefork-2": ["-P", "prefork", "-c", "2"],
}


def run_once(name: str, feeds: int, latency: float, broker: str | None, queue_suffix: str) -> dict:
    out = tempfile.mktemp(suffix=".json")
    argv = [sys.executable, "-m", "examples.feedhub", *CONFIGS[name], "--feeds", str(feeds),
            "--latency", str(latency), "--error-rate", "0", "--timeout-rate", "0", "--malformed-rate", "0",
            "--clean", "--json", out]
    env = {**os.environ, "PYTHONPATH": ROOT}
    if broker:
        argv += ["--broker", broker]
        env.update(FEEDHUB_FETCH_QUEUE=f"bench-feeds-{queue_suffix}", FEEDHUB_PARSE_QUEUE=f"bench-parse-{queue_suffix}")
    load = os.getloadavg()[0]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    with open(out) as f:
        summary = json.load(f)
    os.unlink(out)
    cpu = [line for line in done.stderr.splitlines() if "CPU used" in line]
    summary.update(config=name, loadavg_before=round(load, 2), cpu_line=cpu[0].strip() if cpu else None)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.25, help="mean site response time (s)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--broker", default=None, help="e.g. redis://127.0.0.1:6379/4 [embedded]")
    parser.add_argument("--json", default="bench/results/feedhub_throughput.json")
    args = parser.parse_args()
    names = args.configs.split(",")
    started = datetime.now(timezone.utc)
    results = []
    for run in range(args.runs):
        for name in names:
            summary = run_once(name, args.feeds, args.latency, args.broker, f"{os.getpid()}-{run}")
            results.append(summary)
            print(f"run {run + 1} {name}: {summary['feeds_per_second']} feeds/s "
                  f"(fetch stage {summary['fetched_per_second']}/s, load {summary['loadavg_before']})",
                  file=sys.stderr, flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    meta = {"date": started.isoformat(timespec="seconds"), "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "feeds": args.feeds, "latency": args.latency, "broker": args.broker or "embedded",
            "argv": sys.argv}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "runs": results}, f, indent=2)
    print(f"\n{meta['date']}, {meta['machine']}, Python {meta['python']}, broker {meta['broker']}, "
          f"{args.feeds} feeds, site latency {args.latency}s, {args.runs} runs each\n")
    print("| worker | feeds/s (median) | runs | fetch stage feeds/s (median) | load avg before |")
    print("|---|---|---|---|---|")
    for name in names:
        mine = [r for r in results if r["config"] == name]
        rates = [r["feeds_per_second"] for r in mine]
        fetch = [r["fetched_per_second"] for r in mine]
        loads = [r["loadavg_before"] for r in mine]
        print(f"| `{' '.join(CONFIGS[name])}` | {statistics.median(rates):.1f} | "
              f"{', '.join(f'{x:.1f}' for x in rates)} | {statistics.median(fetch):.1f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
    main()
