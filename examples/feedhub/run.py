"""Run feedhub end to end: ``python -m examples.feedhub``.

``demo`` (the default) needs no server installed: it starts the local feed
server and a greenq worker on the embedded broker (``-P gevent -c 1000
--cpu-pool 2``), sends every feed, shows a progress bar and prints a summary.
``send`` only sends and reports, for workers you started yourself (on
Redis, say); see docs/feedhub.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAILURE_KINDS = {
    "ServerError": "server error (5xx), gave up after retries",
    "ReadTimeout": "timeout, gave up after retries",
    "ConnectTimeout": "timeout, gave up after retries",
    "Timeout": "timeout, gave up after retries",
    "ConnectionError": "connection refused, gave up after retries",
    "FeedGone": "not found (404)",
    "MalformedFeed": "malformed XML",
    "TimeLimitExceeded": "time limit",
    "WorkerLostError": "worker process lost",
}


class Progress:
    """Feeds move from fetching to parsing to done; results are read from the result store."""

    def __init__(self, app: Any, fetch_ids: list[str]) -> None:
        self.backend = app.backend
        self.fetching = list(fetch_ids)
        self.parsing: list[str] = []
        self.total = len(fetch_ids)
        self.fetched_at: float | None = None   # when the last fetch finished
        self.done = 0
        self.entries = 0
        self.new = 0
        self.retries = 0
        self.failures: Counter[str] = Counter()

    def poll(self) -> None:
        still = []
        for task_id, meta in zip(self.fetching, self.backend.get_many_meta(self.fetching)):
            if meta["status"] == "SUCCESS":
                self.retries += meta["result"]["attempts"] - 1
                self.parsing.append(meta["result"]["parse_id"])
            elif meta["status"] == "FAILURE":
                self.fail(meta)
            else:
                still.append(task_id)
        self.fetching = still
        if not still and self.fetched_at is None:
            self.fetched_at = time.monotonic()
        still = []
        for task_id, meta in zip(self.parsing, self.backend.get_many_meta(self.parsing)):
            if meta["status"] == "SUCCESS":
                self.done += 1
                self.entries += meta["result"]["entries"]
                self.new += meta["result"]["new"]
            elif meta["status"] == "FAILURE":
                self.fail(meta)
            else:
                still.append(task_id)
        self.parsing = still

    def fail(self, meta: dict[str, Any]) -> None:
        self.done += 1
        result = meta.get("result") or {}
        exc_type = result.get("exc_type", "?") if isinstance(result, dict) else "?"
        self.failures[FAILURE_KINDS.get(exc_type, exc_type)] += 1

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def bar(self, elapsed: float, width: int = 30) -> str:
        filled = int(width * self.done / max(self.total, 1))
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (f"[{'#' * filled}{'-' * (width - filled)}] {self.done}/{self.total} feeds  {rate:6.1f}/s  "
                f"entries {self.new}  failed {sum(self.failures.values())}  "
                f"(fetching {len(self.fetching)}, parsing {len(self.parsing)})")


def send_and_watch(urls: list[str], timeout: float, quiet: bool = False) -> dict[str, Any]:
    """Send a fetch_feed task per URL, show progress until all are done; returns the summary."""
    from examples.feedhub.tasks import app, fetch_feed

    started = time.monotonic()
    ids = [fetch_feed.delay(url).id for url in urls]
    sent = time.monotonic() - started
    progress = Progress(app, ids)
    tty = sys.stderr.isatty()
    last_line = 0.0
    deadline = started + timeout
    while not progress.finished and time.monotonic() < deadline:
        time.sleep(0.25)
        progress.poll()
        now = time.monotonic()
        if not quiet and (tty or now - last_line >= 2.0 or progress.finished):
            print(("\r" if tty else "") + progress.bar(now - started), end="" if tty else "\n",
                  file=sys.stderr, flush=True)
            last_line = now
    elapsed = time.monotonic() - started
    fetch_seconds = (progress.fetched_at or time.monotonic()) - started
    if tty and not quiet:
        print(file=sys.stderr)
    app.close()
    return {
        "feeds": progress.total, "done": progress.done, "seconds": round(elapsed, 2),
        "send_seconds": round(sent, 2), "feeds_per_second": round(progress.done / elapsed, 1),
        "fetch_seconds": round(fetch_seconds, 2), "fetched_per_second": round(progress.total / fetch_seconds, 1),
        "entries": progress.entries, "entries_new": progress.new, "retries": progress.retries,
        "failures": dict(progress.failures), "unfinished": progress.total - progress.done,
    }


def print_summary(summary: dict[str, Any], title: str) -> None:
    print(f"\nfeedhub: {title}")
    print(f"  feeds:          {summary['done']} of {summary['feeds']} in {summary['seconds']:.1f}s "
          f"= {summary['feeds_per_second']:.1f} feeds/s")
    print(f"  fetch stage:    every feed fetched (or given up) after {summary['fetch_seconds']:.1f}s "
          f"= {summary['fetched_per_second']:.1f} feeds/s")
    print(f"  entries stored: {summary['entries_new']} new ({summary['entries']} parsed)")
    print(f"  retries:        {summary['retries']} (5xx and timeouts that later succeeded)")
    failures = summary["failures"]
    print(f"  failures:       {sum(failures.values())}")
    for kind, count in sorted(failures.items(), key=lambda kv: -kv[1]):
        print(f"    {count:5d}  {kind}")
    if summary["unfinished"]:
        print(f"  unfinished:     {summary['unfinished']} (timed out waiting)")


def fetch_urls(server: str) -> list[str]:
    """Every feed URL of the feed server, from its OPML list."""
    with urllib.request.urlopen(f"{server}/opml", timeout=10) as response:   # a direct request, no proxy
        return re.findall(r'xmlUrl="([^"]+)"', response.read().decode())


class Child:
    """A subprocess we started and stop again."""

    def __init__(self, argv: list[str], env: dict[str, str], log: str, read_stdout: bool = False) -> None:
        self.log = log
        self.handle = open(log, "ab")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stderr=self.handle, start_new_session=True,
                                     stdout=subprocess.PIPE if read_stdout else self.handle)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.handle.close()


def wait_for(path: str, pattern: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                if re.search(pattern, f.read()):
                    return
        time.sleep(0.1)
    tail = ""
    for log in (path, os.path.join(os.path.dirname(path), "worker.out")):
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                tail += f.read()[-3000:]
    raise SystemExit(f"feedhub: the worker did not start (see {path}):\n{tail}")


def demo(args: argparse.Namespace) -> int:
    try:
        import feedparser  # noqa: F401
        import gevent  # noqa: F401
        import requests  # noqa: F401
    except ImportError as exc:
        print(f"feedhub needs {exc.name}: pip install -e '.[examples]'", file=sys.stderr)
        return 2
    home = args.home or tempfile.mkdtemp(prefix="feedhub-")
    os.makedirs(home, exist_ok=True)
    env = {**os.environ, "GREENQ_HOME": home, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    if args.broker:   # on Redis, results go next to the queues (examples/feedhub/tasks.py)
        env["GREENQ_BROKER_URL"] = os.environ["GREENQ_BROKER_URL"] = args.broker
        if not (args.broker.startswith("redis") or os.environ.get("GREENQ_RESULT_BACKEND")):
            print("feedhub: with this broker, set GREENQ_RESULT_BACKEND (e.g. redis://...) so that "
                  "progress can be read", file=sys.stderr)
            return 2
    else:
        for name in ("GREENQ_BROKER_URL", "GREENQ_RESULT_BACKEND"):
            env.pop(name, None)
            os.environ.pop(name, None)
    os.environ.update(GREENQ_HOME=home)
    server_args = ["--port", "0", "--sites", str(args.sites), "--feeds-per-site", str(args.feeds_per_site),
                   "--latency", str(args.latency), "--error-rate", str(args.error_rate),
                   "--timeout-rate", str(args.timeout_rate), "--malformed-rate", str(args.malformed_rate),
                   "--seed", str(args.seed)]
    server = Child([sys.executable, "-m", "examples.feedhub.server", *server_args], env,
                   os.path.join(home, "server.log"), read_stdout=True)
    worker = None
    try:
        line = server.proc.stdout.readline().decode()   # type: ignore[union-attr]
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise SystemExit(f"feedhub: the feed server did not start (see {server.log})")
        url = match.group(1)
        pool_args = ["-P", args.pool, "-c", str(args.concurrency)]
        if args.pool != "prefork" and args.cpu_pool:
            pool_args += ["--cpu-pool", str(args.cpu_pool)]
        worker_log = os.path.join(home, "worker.log")
        worker_env = {**env, "FEEDHUB_PROXY": url, "FEEDHUB_TIMEOUT": str(args.fetch_timeout)}
        worker = Child([sys.executable, "-m", "greenq", "worker", "-A", "examples.feedhub.tasks", *pool_args,
                        "-l", "INFO", "-f", worker_log], worker_env, os.path.join(home, "worker.out"))
        print(f"feedhub: feed server {url} ({args.sites} sites), worker {' '.join(pool_args)}, "
              f"data in {home}", file=sys.stderr)
        wait_for(worker_log, r"ready: -P", worker.proc, 90)
        urls = fetch_urls(url)
        random.Random(args.seed).shuffle(urls)
        urls = urls[: args.feeds] if args.feeds else urls
        summary = send_and_watch(urls, args.timeout)
        print_summary(summary, f"{' '.join(pool_args)} on {args.broker or 'the embedded broker'}")
        summary.update(pool=" ".join(pool_args), home=home)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
        if not (args.clean and not args.home):
            print(f"  logs:           {worker_log}, {server.log}")
        return 0 if not summary["unfinished"] else 1
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"  CPU used:       {used.ru_utime + used.ru_stime:.1f}s by the worker, its CPU processes "
              "and the feed server", file=sys.stderr)
        if args.clean and not args.home:
            shutil.rmtree(home, ignore_errors=True)


def send(args: argparse.Namespace) -> int:
    urls = fetch_urls(args.server)
    random.Random(args.seed).shuffle(urls)
    urls = urls[: args.feeds] if args.feeds else urls
    summary = send_and_watch(urls, args.timeout)
    print_summary(summary, f"sent to {os.environ.get('GREENQ_BROKER_URL', 'the embedded broker')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if not summary["unfinished"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.feedhub",
                                     description="A feed crawler on greenq: fetch on green threads, parse in "
                                                 "child processes.")
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser("demo", help="start a feed server and a worker, crawl, summarise (the default)")
    d.add_argument("--feeds", type=int, default=1000, help="how many feeds to crawl (0: all) [%(default)s]")
    d.add_argument("--sites", type=int, default=200, help="domains on the feed server [%(default)s]")
    d.add_argument("--feeds-per-site", type=int, default=10)
    d.add_argument("-P", "--pool", default="gevent", choices=["gevent", "prefork", "threads"])
    d.add_argument("-c", "--concurrency", type=int, default=None, help="[1000 for gevent, 2 for prefork]")
    d.add_argument("--cpu-pool", type=int, default=2, help="CPU processes for parse_feed [%(default)s]")
    d.add_argument("--latency", type=float, default=0.25, help="mean response time of a site (s)")
    d.add_argument("--error-rate", type=float, default=0.03)
    d.add_argument("--timeout-rate", type=float, default=0.005)
    d.add_argument("--malformed-rate", type=float, default=0.01)
    d.add_argument("--fetch-timeout", type=float, default=2.0, help="the crawler's HTTP timeout (s)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")
    d.add_argument("--broker", help="broker URL, e.g. redis://127.0.0.1:6379/0 [the embedded broker]")
    d.add_argument("--home", help="greenq data directory [a new temporary one]")
    d.add_argument("--clean", action="store_true", help="delete the temporary data directory afterwards")
    d.add_argument("--json", help="also write the summary to this file")
    s = sub.add_parser("send", help="send the feeds of a running feed server to running workers")
    s.add_argument("--server", default="http://127.0.0.1:8765", help="the feed server [%(default)s]")
    s.add_argument("--feeds", type=int, default=0, help="how many feeds (0: all)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--timeout", type=float, default=600.0)
    s.add_argument("--json")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "demo")
    args = parser.parse_args(argv)
    if args.command == "send":
        return send(args)
    if args.concurrency is None:
        args.concurrency = 2 if args.pool == "prefork" else 1000 if args.pool == "gevent" else 50
    return demo(args)
