"""Where a greenq worker's time goes per task, on no-op throughput.

For each mode (results ignored, results stored in Redis):

1. N no-op tasks are sent with greenq's client, then their queue is moved
   aside (``RENAME``) so that a freshly started worker (``greenq worker -P
   gevent -c 1000``, the benchmark's command) comes up idle.
2. ``py-spy record`` attaches to the idle worker; the queue is moved back;
   sampling stops when the worker writes its done marker.  Only the drain is
   sampled, and only while the thread holds the GIL (``--gil``: a wait on a
   socket or in the event loop releases it), so the samples are where the
   CPU goes.
3. Each sample is put in one step of the per-task path by its innermost
   frame that belongs to a step (``STEPS`` below, checked from the leaf up;
   a sample with no Python frame is gevent's compiled code),
   and the worker's CPU per task (``/proc`` at release, ``process_time`` at
   done) is split by those shares.
4. A second, untimed pass drains again under Redis MONITOR and counts the
   commands the worker sent per task (:mod:`bench.rediscount`).

Run by hand from the checkout root, in the bench virtualenv (py-spy needs to
be allowed to ptrace the worker; root is)::

    .bench-venv/bin/python bench/profile_worker.py --tasks 50000

Prints Markdown tables and writes ``bench/results/profile_worker.json``;
``--keep-stacks DIR`` keeps py-spy's raw stacks (flamegraph input).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.foundation import BIN, REDIS_URL, ROOT, Bench, worker_argv  # noqa: E402
from bench.rediscount import CommandCounter  # noqa: E402

# (step, file substring, function names or None for any).  A sample belongs
# to the step of its innermost frame that matches a rule; frames that match
# none (redis-py, gevent's sockets and waits, kombu's serializers, json, the stdlib) are
# transparent, so I/O and parsing count for the greenq step that asked for them.
STEPS: list[tuple[str, str, set[str] | None]] = [
    ("benchmark's done counter (hook)", "bench/peers/", {"on_postrun", "on_ready", "task_done", "ready"}),
    ("run (the task itself)", "bench/peers/greenq_app.py", {"noop"}),
    ("result store", "greenq/backends/", None),
    ("decode (message -> Request)", "greenq/protocol.py", None),
    ("decide", "greenq/strategy.py", None),
    ("signals (task_prerun/postrun/...)", "greenq/signals.py", None),
    ("execute (tracer bookkeeping)", "greenq/execute.py", None),
    ("execute (tracer bookkeeping)", "greenq/task.py", {"set_current_request", "reset_current_request"}),
    ("execute (tracer bookkeeping)", "greenq/worker.py", {"run_in_slot"}),
    ("ack (buffered; one pipeline per batch)", "greenq/transport/redis.py", {"ack", "flush_acks"}),
    ("ack (buffered; one pipeline per batch)", "kombu/transport/virtual/base.py", {"ack", "basic_ack"}),
    ("ack (buffered; one pipeline per batch)", "kombu/message.py", {"ack"}),
    ("ack (buffered; one pipeline per batch)", "greenq/worker.py", {"ack"}),
    ("broker fetch (BRPOP, batch script, envelope)", "greenq/transport/redis.py", None),
    ("broker fetch (BRPOP, batch script, envelope)", "kombu/transport/", None),
    ("broker fetch (BRPOP, batch script, envelope)", "kombu/messaging.py", None),
    ("broker fetch (BRPOP, batch script, envelope)", "kombu/message.py", None),
    ("broker fetch (BRPOP, batch script, envelope)", "kombu/connection.py", None),
    ("spawn / finish a green thread (pool)", "greenq/pools/", None),
    ("spawn / finish a green thread (pool)", "greenq/worker.py", {"dispatch", "start_task"}),
    ("spawn / finish a green thread (pool)", "gevent/pool.py", None),
    ("spawn / finish a green thread (pool)", "gevent/greenlet.py", None),
    ("outcomes (loop side)", "greenq/worker.py", {"process_outcomes"}),
    ("control loop (on_message, tick, housekeeping)", "greenq/worker.py", None),
    ("gevent hub (event loop, callbacks)", "gevent/hub.py", None),
]
# Shared helpers that both the transport (envelopes) and decode (bodies) call:
# transparent too, so their caller decides the step.
TRANSPARENT = {("greenq/protocol.py", name) for name in ("json_loads", "_plain_json", "_may_hold_typed_values")}
NO_PYTHON_FRAME = "gevent compiled code: loop callbacks, green thread start/switch (no Python frame)"
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def classify(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        m = FRAME.match(frame.strip())
        if not m:
            continue
        func, path = m.group("func").split(".")[-1], m.group("file")
        if any(where in path and func == name for where, name in TRANSPARENT):
            continue
        for step, where, funcs in STEPS:
            if where in path and (funcs is None or func in funcs):
                return step
    return "other"


def read_stacks(path: str) -> tuple[collections.Counter[str], int]:
    steps: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            # No Python frame while holding the GIL: gevent's compiled (Cython)
            # code -- the event loop running callbacks, green threads starting
            # and switching -- which has no frames of its own.
            steps[classify(stack) if stack.strip() else NO_PYTHON_FRAME] += int(count)
            total += int(count)
    return steps, total


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(bench: Bench, results: bool, n: int, tool: str, rate: int, stacks_dir: str) -> dict[str, Any]:
    """Send n no-ops, start an idle worker, attach ``tool``, release the queue, wait for done."""
    run = bench.new_run(f"profile-{'r' if results else 'i'}-{tool}")
    queue, parked = f"{run}-q", f"{run}-parked"
    ids = os.path.join(bench.tmp, f"{run}.ids")
    process = spy = None
    record: dict[str, Any] = {"results": results, "tasks": n, "tool": tool}
    try:
        bench.client("send", "greenq", "noop", run, results, n, str(n), "-", ids)
        bench.redis.rename(queue, parked)
        process, log_path = bench.start_worker("greenq", run, results, n)
        if bench.wait_marker(run, "ready", time.monotonic() + 60, process, log_path) is None:
            raise RuntimeError("worker not ready")
        time.sleep(1.0)
        counter = None
        if tool == "py-spy":
            out = os.path.join(stacks_dir, f"{'results' if results else 'ignored'}.txt")
            spy = subprocess.Popen([os.path.join(BIN, "py-spy"), "record", "--pid", str(process.pid), "-r", str(rate),
                                    "--gil", "-f", "raw", "-o", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
            time.sleep(2.0)  # attached
        else:
            counter = CommandCounter(REDIS_URL, ignore_keys=(f"{run}:done", f"{run}:progress", f"{run}:ready"))
            counter.__enter__()
        cpu_at_release = proc_cpu(process.pid)
        released = time.time()
        bench.redis.rename(parked, queue)
        done = bench.wait_marker(run, "done", time.monotonic() + 600, process, log_path)
        if done is None:
            raise RuntimeError(f"no done marker; progress {bench.redis.get(f'{run}:progress')}")
        record.update(seconds=done["at"] - released, cpu_us_per_task=(done["cpu"] - cpu_at_release) / n * 1e6)
        if spy is not None:
            os.killpg(spy.pid, signal.SIGINT)
            output = spy.communicate(timeout=60)[0]
            spy = None
            steps, total = read_stacks(out)
            counted = re.search(r"Samples: \d+ Errors: \d+", output)
            record.update(samples=total, steps=dict(steps.most_common()),
                          pyspy=counted.group(0) if counted else output[-200:])
        if counter is not None:
            counter.__exit__(None, None, None)
            record.update(counter.per_task(n))
    finally:
        if spy is not None:
            os.killpg(spy.pid, signal.SIGINT)
            spy.wait(timeout=30)
        if process is not None:
            bench.stop_worker(process)
        bench.cleanup(run)
    return record


def table(record: dict[str, Any]) -> str:
    total = record["samples"]
    cpu = record["cpu_us_per_task"]
    lines = ["| step | us/task | % of CPU |", "|---|---:|---:|"]
    for step, count in record["steps"].items():
        lines.append(f"| {step} | {cpu * count / total:.1f} | {100 * count / total:.1f} |")
    lines.append(f"| **total** (worker CPU / task) | **{cpu:.1f}** | 100 |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--monitor-tasks", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--modes", default="ignored,results")
    parser.add_argument("--keep-stacks", default=None, metavar="DIR")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "profile_worker.json"))
    args = parser.parse_args()
    bench = Bench(argparse.Namespace(concurrency=args.concurrency, delay=0.1, deadline=600))
    stacks_dir = args.keep_stacks or tempfile.mkdtemp(prefix="greenq-stacks-")
    os.makedirs(stacks_dir, exist_ok=True)
    report: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "loadavg": os.getloadavg(), "argv": sys.argv[1:],
                              "worker": " ".join(["greenq", *worker_argv("greenq", "<run>-q", "<run>",
                                                                          args.concurrency)[1:]])}
    for mode in args.modes.split(","):
        results = mode == "results"
        profiled = drain(bench, results, args.tasks, "py-spy", args.rate, stacks_dir)
        counted = drain(bench, results, args.monitor_tasks, "monitor", args.rate, stacks_dir)
        report[mode] = {"profile": profiled, "commands": counted}
        print(f"\n### no-op, results {mode}: {profiled['tasks']} tasks in {profiled['seconds']:.2f}s under py-spy "
              f"({profiled['samples']} samples), {profiled['cpu_us_per_task']:.1f} us CPU/task\n")
        print(table(profiled))
        print(f"\nRedis commands per task (MONITOR, {counted['tasks']} tasks): "
              f"{counted['client_commands_per_task']} sent by the worker {counted['client']}, "
              f"{counted['script_commands_per_task']} inside scripts {counted['inside_scripts']}")
    report["loadavg_end"] = os.getloadavg()
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    if not args.keep_stacks:
        shutil.rmtree(stacks_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
