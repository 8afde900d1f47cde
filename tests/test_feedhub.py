"""examples/feedhub end to end: the README's one command on the embedded broker,
and the same app on Redis with a green fetch worker and a prefork parse worker."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from tests.integration.helpers import drop_queue
from tests.support import ROOT, require, unique, worker

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def run(argv, env, timeout=150):
    return subprocess.run([sys.executable, "-m", "examples.feedhub", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_readme_command_crawls_everything_on_the_embedded_broker(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    home = str(tmp_path / "home")
    done = run(["--feeds", "200", "--sites", "20", "--error-rate", "0.2", "--malformed-rate", "0.1",
                "--latency", "0.05", "--home", home, "--json", str(tmp_path / "summary.json")], env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "200 of 200" in out and "feeds/s" in out
    assert "-P gevent -c 1000 --cpu-pool 2" in out
    stored = int(re.search(r"entries stored: (\d+) new", out).group(1))
    assert re.search(r"\d+\s+malformed XML", out)
    assert int(re.search(r"retries:\s+(\d+)", out).group(1)) > 0    # 5xx answers retried, then fine
    # what the summary says is what the database holds
    with sqlite3.connect(os.path.join(home, "feedhub.sqlite3")) as db:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == stored > 1000
    assert "[##############################] 200/200" in done.stderr   # the progress bar reached the end


def test_the_same_app_on_redis_with_separate_green_and_prefork_workers(tmp_path):
    redis_url = require("redis")
    fetch_q, parse_q = unique("fh-feeds"), unique("fh-parse")
    env = {**os.environ, "PYTHONPATH": ROOT, "GREENQ_BROKER_URL": redis_url, "GREENQ_RESULT_BACKEND": redis_url,
           "FEEDHUB_FETCH_QUEUE": fetch_q, "FEEDHUB_PARSE_QUEUE": parse_q,
           "FEEDHUB_DB": str(tmp_path / "entries.sqlite3")}
    server = subprocess.Popen([sys.executable, "-m", "examples.feedhub.server", "--port", "0", "--sites", "10",
                               "--latency", "0.05", "--error-rate", "0"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline()).group(0)
        common = dict(broker=redis_url, backend=redis_url, home=str(tmp_path / "home"),
                      env={k: v for k, v in env.items() if k.startswith("FEEDHUB")} | {"FEEDHUB_PROXY": url})
        with worker("examples.feedhub.tasks", pool="gevent", concurrency=200, args=("-Q", fetch_q), **common) as green, \
                worker("examples.feedhub.tasks", pool="prefork", concurrency=2, args=("-Q", parse_q), **common) \
                as prefork:
            done = run(["send", "--server", url, "--feeds", "100"], env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "100 of 100" in done.stdout
            assert re.search(r"feedhub\.fetch_feed\[.*succeeded", green.log)
            assert not re.search(r"feedhub\.parse_feed\[", green.log)          # parsing is not done here
            assert re.search(r"INFO/greenq-prefork-\d+\] task feedhub\.parse_feed\[.*succeeded", prefork.log)
        with sqlite3.connect(str(tmp_path / "entries.sqlite3")) as db:
            assert db.execute("SELECT COUNT(*) FROM feeds").fetchone()[0] >= 95
    finally:
        server.terminate()
        server.wait(10)
        for name in (fetch_q, parse_q):
            drop_queue(redis_url, name)
