"""Shutdown, crashes and lost connections: running work finishes or comes back, never vanishes."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.integration.helpers import (
    close_rabbitmq_connections_of,
    kill_redis_connections_of,
    queue_depth,
    wait_until,
)
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

SCENARIOS = "tests.apps.scenarios"


@pytest.fixture(params=["redis", "amqp"])
def server(request):
    return (request.param, *broker_urls(request.param))


def exit_code(proc, timeout):
    try:
        return proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running after {timeout}s:\n{proc.log[-3000:]}") from None


class TestShutdown:
    """SIGTERM, the deadline and a second signal."""

    @pytest.mark.parametrize("pool", ["threads", "gevent"])
    def test_warm_shutdown_lets_running_tasks_finish_and_returns_waiting_ones(self, server, pool, queue, home, marks):
        kind, broker_url, backend_url = server
        with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home,
                    args=("--shutdown-timeout", "20")) as proc:
            app = client_app(broker_url, backend_url, queue=queue, home=home)
            try:
                gate = unique("gate")
                # sent first, so the worker holds it by the time the second one starts (queues are FIFO)
                waiting = app.send_task("tests.apps.basic.add", (1, 1), countdown=60)
                running = app.send_task(f"{SCENARIOS}.gated", (gate,))
                wait_until(lambda: marks.exists(f"{gate}.started"), message="the task to start")
                assert queue_depth(broker_url, queue) == 0
                proc.signal(signal.SIGTERM)
                proc.wait_for_log(r"warm shutdown \(SIGTERM\)")
                assert proc.proc.poll() is None, "it must wait for the running task"
                marks.set(f"{gate}.go")
                assert running.get(timeout=20) == gate
                assert exit_code(proc, 15) == 0
                assert "requeued" not in proc.log
                # the ETA task it held, never started, went back to the broker
                assert wait_until(lambda: queue_depth(broker_url, queue) == 1, timeout=10, message="the ETA task back")
                assert waiting.state == "PENDING"
            finally:
                app.close()


    @pytest.mark.parametrize("pool", ["threads", "gevent"])
    @pytest.mark.parametrize("task", ["slow_first_time", "slow_first_time_late"])
    def test_tasks_running_at_the_deadline_are_requeued_not_lost(self, server, pool, task, queue, home, marks):
        kind, broker_url, backend_url = server
        name = unique("slow")
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home,
                        args=("--shutdown-timeout", "1")) as first:
                result = app.send_task(f"{SCENARIOS}.{task}", (name,))
                wait_until(lambda: marks.exists(f"{name}.started"), message="the task to start")
                started = time.monotonic()
                first.signal(signal.SIGTERM)
                assert exit_code(first, 15) == 0
                assert time.monotonic() - started < 8, "the deadline was not kept"
                assert "1 task(s) still running at the shutdown deadline are requeued" in first.log
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home):
                assert result.get(timeout=30) == "second run"
        finally:
            app.close()


    def test_a_second_signal_is_a_cold_shutdown(self, server, queue, home, marks):
        kind, broker_url, backend_url = server
        name = unique("slow")
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool="gevent", queue=queue, home=home,
                        args=("--shutdown-timeout", "60")) as first:
                result = app.send_task(f"{SCENARIOS}.slow_first_time", (name,))
                wait_until(lambda: marks.exists(f"{name}.started"), message="the task to start")
                first.signal(signal.SIGTERM)
                first.wait_for_log(r"warm shutdown")
                started = time.monotonic()
                first.signal(signal.SIGINT)
                first.wait_for_log(r"cold shutdown \(SIGINT\)")
                assert exit_code(first, 15) == 0
                assert time.monotonic() - started < 8, "a cold shutdown must not wait for the deadline"
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool="gevent", queue=queue, home=home):
                assert result.get(timeout=30) == "second run"
        finally:
            app.close()


class TestFailures:
    """A killed worker and a lost broker connection."""

    def test_acks_late_work_of_a_killed_worker_runs_again(self, server, queue, home, marks):
        kind, broker_url, backend_url = server
        env = {"GREENQ_TEST_VISIBILITY_TIMEOUT": "2"}  # Redis: how soon kombu gives an unacked message back
        gate = unique("gate")
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool="gevent", queue=queue, home=home,
                        env=env) as first:
                result = app.send_task(f"{SCENARIOS}.gated_late", (gate,))
                wait_until(lambda: marks.exists(f"{gate}.started"), message="the task to start")
                first.signal(signal.SIGKILL)
                assert exit_code(first, 10) == -signal.SIGKILL
            with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool="gevent", queue=queue, home=home,
                        env=env) as second:
                try:
                    wait_until(lambda: marks.count(f"{gate}.runs") >= 2, timeout=30, message="the task to run again")
                except AssertionError:
                    raise AssertionError(f"never ran again; the new worker's log:\n{second.log[-5000:]}") from None
                marks.set(f"{gate}.go")
                assert result.get(timeout=20) == gate
        finally:
            app.close()


    @pytest.mark.parametrize("pool", ["threads", "gevent"])
    def test_worker_reconnects_after_losing_the_broker_and_keeps_late_acked_work(self, server, pool, queue, home, marks):
        kind, broker_url, backend_url = server
        gate = unique("gate")
        with worker(SCENARIOS, broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home) as proc:
            app = client_app(broker_url, backend_url, queue=queue, home=home)
            try:
                assert app.send_task("tests.apps.basic.add", (1, 1)).get(timeout=20) == 2
                result = app.send_task(f"{SCENARIOS}.gated_late", (gate,))
                wait_until(lambda: marks.exists(f"{gate}.started"), message="the task to start")
                if kind == "redis":
                    assert kill_redis_connections_of(proc.pid) > 0
                else:
                    assert close_rabbitmq_connections_of(proc.pid) > 0
                proc.wait_for_log(r"lost the broker connection", timeout=30)
                proc.wait_for_log(r"consuming again", timeout=30)
                marks.set(f"{gate}.go")
                assert result.get(timeout=30) == gate
                # it keeps consuming
                assert [app.send_task("tests.apps.basic.add", (i, i)).get(timeout=20) for i in range(3)] == [0, 2, 4]
                assert proc.proc.poll() is None
            finally:
                app.close()
