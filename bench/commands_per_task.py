"""Redis commands per task for every system, on the no-op workload, with MONITOR.

Untimed (MONITOR slows Redis): N no-op tasks are sent, a worker is started
(the same apps and commands as ``bench/foundation.py``) and drains them while
:class:`bench.rediscount.CommandCounter` counts what reaches database 5, sending
included or not (``--with-send``).  Prints a Markdown table and writes JSON::

    .bench-venv/bin/python bench/commands_per_task.py --tasks 2000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.foundation import REDIS_URL, ROOT, SYSTEMS, Bench  # noqa: E402
from bench.rediscount import CommandCounter  # noqa: E402


def drain_counted(bench: Bench, system: str, results: bool, n: int) -> dict[str, Any]:
    run = bench.new_run(f"{system}-count{'-r' if results else ''}")
    ids = os.path.join(bench.tmp, f"{run}.ids")
    process = None
    try:
        with CommandCounter(REDIS_URL, ignore_keys=(f"{run}:done", f"{run}:ready", f"{run}:progress")) as sending:
            bench.client("send", system, "noop", run, results, n, str(n), "-", ids)
        with CommandCounter(REDIS_URL, ignore_keys=(f"{run}:done", f"{run}:ready", f"{run}:progress")) as draining:
            process, log_path = bench.start_worker(system, run, results, n)
            deadline = time.monotonic() + 600
            if bench.wait_marker(run, "ready", deadline, process, log_path) is None \
                    or bench.wait_marker(run, "done", deadline, process, log_path) is None:
                raise RuntimeError(f"{system} did not finish; progress {bench.redis.get(f'{run}:progress')}")
            time.sleep(0.5)  # acks or stores still buffered at the n-th task
        return {"system": system, "results": results, "tasks": n,
                "send": sending.per_task(n), "worker": draining.per_task(n)}
    finally:
        if process is not None:
            bench.stop_worker(process)
        bench.cleanup(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "commands_per_task.json"))
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(concurrency=args.concurrency, delay=0.1, deadline=600))
    records = [drain_counted(bench, system, results, args.tasks)
               for results in (False, True) for system in args.systems.split(",")]
    with open(args.json, "w") as f:
        json.dump(records, f, indent=1)
    print("| system | results | worker: commands/task | of which | inside Lua scripts/task | client send/task |")
    print("|---|---|---:|---|---:|---:|")
    for r in records:
        top = ", ".join(f"{k} {v:g}" for k, v in list(r["worker"]["client"].items())[:6])
        print(f"| {r['system']} | {'stored' if r['results'] else 'ignored'} | "
              f"{r['worker']['client_commands_per_task']} | {top} | {r['worker']['script_commands_per_task']} | "
              f"{r['send']['client_commands_per_task']} |")


if __name__ == "__main__":
    main()
