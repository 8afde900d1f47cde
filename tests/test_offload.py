"""CPU offload in a green worker: ``-P gevent --cpu-pool 1``.

CPU-bound tasks run in a child process while the I/O tasks keep flowing on
the green threads; the control case (the same work not declared CPU-bound)
shows that the timing assertions do detect a held hub.
"""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from greenq import App
from greenq.cli import main
from greenq.exceptions import ConfigurationError, TimeLimitExceeded
from tests.integration.helpers import drop_queue
from tests.support import broker_urls, client_app, unique, worker

pytestmark = pytest.mark.timeout(90)

CRUNCH = 1.5      # seconds of pure-Python CPU work
IO_WAIT = 0.05    # seconds each I/O task waits


@pytest.fixture(scope="module", params=["redis", "amqp"])
def green(request, tmp_path_factory):
    broker_url, backend_url = broker_urls(request.param)
    home = str(tmp_path_factory.mktemp("offload-home"))
    queue = unique("off")
    with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, pool="gevent", concurrency=100,
                home=home, env={"GREENQ_TEST_QUEUE": queue},
                args=("--cpu-pool", "1", "--cpu-queues", f"{queue}-cpu")) as proc:
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            yield proc, app, queue
        finally:
            app.close()
            for name in (queue, f"{queue}-cpu"):
                drop_queue(broker_url, name)


def io_latencies_while(app, cpu_task):
    """Send ``cpu_task`` and then 20 I/O tasks; returns (I/O latencies, cpu result, I/O results)."""
    cpu = app.send_task(f"tests.apps.mixed.{cpu_task}", (CRUNCH,))
    time.sleep(0.3)   # the CPU task is running now
    ios = [app.send_task("tests.apps.mixed.io_wait", (IO_WAIT, time.time())) for _ in range(20)]
    results = [r.get(timeout=30) for r in ios]
    return [r["finished_at"] - r["sent_at"] for r in results], cpu.get(timeout=30), results


@pytest.mark.slow
def test_cpu_tasks_run_in_a_child_and_io_tasks_keep_flowing(green):
    proc, app, queue = green
    assert "+ 1 CPU processes" in proc.log
    latencies, cpu_pid, results = io_latencies_while(app, "crunch")
    assert cpu_pid != proc.pid                      # ran in the CPU pool
    assert {r["pid"] for r in results} == {proc.pid}  # I/O tasks ran on the green threads
    assert max(latencies) < IO_WAIT + 0.5, latencies   # not held behind 1.5 s of CPU work


@pytest.mark.slow
def test_control_the_same_work_not_declared_cpu_bound_holds_every_green_thread(green):
    proc, app, queue = green
    latencies, pid, _ = io_latencies_while(app, "crunch_here")
    assert pid == proc.pid
    assert max(latencies) > CRUNCH - 0.5, latencies


@pytest.mark.slow
def test_a_cpu_queue_sends_any_task_to_the_pool(green):
    proc, app, queue = green
    assert app.send_task("tests.apps.mixed.pid", queue=f"{queue}-cpu").get(timeout=20) != proc.pid
    assert app.send_task("tests.apps.mixed.pid").get(timeout=20) == proc.pid


@pytest.mark.slow
def test_cpu_processes_run_at_a_lower_priority_than_the_green_threads(green):
    proc, app, queue = green
    here = app.send_task("tests.apps.mixed.niceness").get(timeout=20)
    there = app.send_task("tests.apps.mixed.niceness", queue=f"{queue}-cpu").get(timeout=20)
    assert there == min(here + 10, 19)   # worker_cpu_pool_nice


@pytest.mark.slow
def test_hard_time_limit_of_an_offloaded_task(green):
    proc, app, queue = green
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        app.send_task("tests.apps.mixed.crunch_forever").get(timeout=20)
    assert time.monotonic() - started < 6.0
    assert app.send_task("tests.apps.mixed.crunch", (0.05,)).get(timeout=20) != proc.pid


@pytest.mark.slow
def test_many_cpu_tasks_queue_for_the_pool_without_taking_green_slots(green):
    proc, app, queue = green
    cpu = [app.send_task("tests.apps.mixed.crunch", (0.2,)) for _ in range(6)]   # 1.2 s for one child
    time.sleep(0.2)
    ios = [app.send_task("tests.apps.mixed.io_wait", (IO_WAIT, time.time())) for _ in range(20)]
    results = [r.get(timeout=30) for r in ios]
    assert max(r["finished_at"] - r["sent_at"] for r in results) < IO_WAIT + 0.5
    assert proc.pid not in {r.get(timeout=30) for r in cpu}   # all six waited for the child


@pytest.mark.slow
def test_green_worker_without_a_cpu_pool_warns_about_cpu_tasks(home):
    broker_url, backend_url = broker_urls("embedded")
    with worker("tests.apps.mixed", broker=broker_url, backend=backend_url, pool="gevent", concurrency=10,
                home=home, env={"GREENQ_TEST_QUEUE": unique("nw")}) as proc:
        proc.wait_for_log(r"tasks declared cpu=True run in this worker's green threads .*"
                          r"tests\.apps\.mixed\.crunch, tests\.apps\.mixed\.crunch_forever\. Start the worker "
                          r"with --cpu-pool N")


def test_the_cpu_option_is_checked_when_the_task_is_declared():
    app = App("decl", broker="memory://")
    with pytest.raises(ConfigurationError, match="task option cpu must be True or False"):
        app.task(cpu="yes")(lambda: None)
    assert app.task(cpu=True)(lambda: None).cpu is True
    assert app.task(lambda: None).cpu is False


@pytest.mark.parametrize("argv, message", [
    (["-P", "prefork", "--cpu-pool", "2"], "-P prefork already runs every task in child processes"),
    (["-P", "threads", "--cpu-queues", "parse"], "--cpu-queues needs --cpu-pool N"),
])
def test_cli_refuses_contradictory_options(argv, message):
    result = CliRunner().invoke(main, ["worker", "-A", "tests.apps.mixed", *argv], obj={})
    assert result.exit_code == 2
    assert message in result.output
