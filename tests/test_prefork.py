"""-P prefork: tasks run in spawned child processes; limits, recycling and crashes.

One worker per broker (module scope) serves most tests; each test sends its
own tasks and asserts what a user sees: results, stored failures, pids.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from greenq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from tests.integration.helpers import drop_queue
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

MAX_TASKS = 3
MAX_MEMORY_KIB = 150 * 1024


@pytest.fixture(scope="module", params=["redis", "amqp"])
def prefork(request, tmp_path_factory):
    """(worker process, client app) for ``-P prefork -c 2`` with both recycling limits."""
    broker_url, backend_url = broker_urls(request.param)
    home = str(tmp_path_factory.mktemp("prefork-home"))
    queue = unique("pf")
    with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, pool="prefork", concurrency=2,
                home=home, env={"GREENQ_TEST_QUEUE": queue},
                args=("--max-tasks-per-child", str(MAX_TASKS), "--max-memory-per-child", str(MAX_MEMORY_KIB))
                ) as proc:
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            yield proc, app
        finally:
            app.close()
            for name in (queue, f"{queue}-cpu"):
                drop_queue(broker_url, name)


def call(app, name, *args, timeout=20, **options):
    return app.send_task(f"tests.apps.mixed.{name}", args, **options)


def test_tasks_run_in_child_processes_and_signal_worker_process_init(prefork):
    proc, app = prefork
    results = [call(app, "add", i, i) for i in range(10)]
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(10)]
    info = call(app, "initialised").get(timeout=20)
    assert info["pid"] != proc.pid                 # not the worker process
    assert info["init_pids"] == [info["pid"]]      # worker_process_init fired once, in that child


def test_a_child_that_dies_fails_its_task_and_is_replaced(prefork):
    proc, app = prefork
    result = call(app, "die")
    with pytest.raises(WorkerLostError, match="exited with signal SIGKILL"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    exited = call(app, "die", "exit")
    with pytest.raises(WorkerLostError, match="exit code 3"):
        exited.get(timeout=20)
    assert [call(app, "add", 1, 1).get(timeout=20) for _ in range(4)] == [2] * 4


def test_acks_late_with_reject_on_worker_lost_runs_the_task_again(prefork, tmp_path):
    proc, app = prefork
    marker = str(tmp_path / "died-once")
    assert call(app, "die_once", marker).get(timeout=30) == "second run"
    assert os.path.exists(marker)


def test_hard_time_limit_kills_the_child_and_the_pool_carries_on(prefork):
    proc, app = prefork
    started = time.monotonic()
    result = call(app, "sleep_past_limit", 30)   # time_limit=1.0, sleeping in C: only a kill stops it
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=20)
    assert time.monotonic() - started < 6.0
    killed = int(proc.wait_for_log(rf"sleep_past_limit\[{result.id}\] hit its hard time limit "
                                   r"\(1.0s\): child (\d+) killed").group(1))
    pids = {call(app, "pid").get(timeout=20) for _ in range(4)}
    assert killed not in pids
    # a limit given with the message wins over the task's
    short = call(app, "sleep", 30, time_limit=0.5)
    with pytest.raises(TimeLimitExceeded):
        short.get(timeout=20)


def test_soft_time_limit_is_raised_inside_the_task(prefork):
    proc, app = prefork
    assert call(app, "soft_limited", 5).get(timeout=20) == "cleaned up"
    # the soft limit of the message: the task sees SoftTimeLimitExceeded and may let it fail the task
    result = call(app, "sleep", 5, soft_time_limit=0.3)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=20)


def test_children_are_recycled_after_max_tasks_per_child(prefork):
    proc, app = prefork
    pids = [call(app, "pid").get(timeout=20) for _ in range(3 * MAX_TASKS + 1)]
    counts = {pid: pids.count(pid) for pid in pids}
    assert max(counts.values()) <= MAX_TASKS, counts
    assert len(counts) >= 3, counts
    assert proc.pid not in counts


def test_children_are_recycled_above_max_memory_per_child(prefork):
    proc, app = prefork
    hog = call(app, "hoard", 200).get(timeout=30)   # 200 MiB kept alive in the child
    proc.wait_for_log(rf"replacing child {hog}: it uses \d+ KiB \(max_memory_per_child {MAX_MEMORY_KIB}\)")
    assert hog not in {call(app, "pid").get(timeout=20) for _ in range(4)}


def test_forkserver_start_method(home):
    broker_url, backend_url = broker_urls("embedded")
    queue = unique("fs")
    with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, pool="prefork", concurrency=1,
                home=home, env={"GREENQ_TEST_QUEUE": queue}, args=("--pool-start-method", "forkserver")) as proc:
        assert "(forkserver)" in proc.log
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            info = app.send_task("tests.apps.mixed.initialised").get(timeout=20)
            assert info["pid"] != proc.pid and info["init_pids"] == [info["pid"]]
        finally:
            app.close()


def test_warm_shutdown_lets_running_child_tasks_finish(home):
    broker_url, backend_url = broker_urls("embedded")
    queue = unique("ws")
    with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, pool="prefork", concurrency=1,
                home=home, env={"GREENQ_TEST_QUEUE": queue}) as proc:
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            result = app.send_task("tests.apps.mixed.sleep", (1.5,))
            proc.wait_for_log(r"ready: -P")
            time.sleep(0.5)   # let it start in the child
            assert proc.stop() == 0
            assert result.get(timeout=5) == 1.5
            assert not re.search(r"exited unexpectedly|WorkerLostError", proc.log)
        finally:
            app.close()
