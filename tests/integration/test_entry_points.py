"""Every way of starting a worker patches first; a process patched too late is refused."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import pytest

from tests.support import ROOT, WorkerProcess, broker_urls, client_app

pytestmark = pytest.mark.timeout(60)

SCRIPT = os.path.join(ROOT, "tests", "apps", "programmatic.py")
GREEN = ["gevent"] + (["eventlet"] if importlib.util.find_spec("eventlet") else [])


def env_for(broker_url, backend_url, queue, home):
    return {**os.environ, "GREENQ_BROKER_URL": broker_url, "GREENQ_RESULT_BACKEND": backend_url,
            "GREENQ_HOME": home, "GREENQ_TEST_QUEUE": queue, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_and_call(argv, queue, home, kind="redis"):
    broker_url, backend_url = broker_urls(kind)
    proc = WorkerProcess(argv, env_for(broker_url, backend_url, queue, home))
    try:
        proc.wait_for_log(r"ready: -P")
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            assert [app.send_task("tests.apps.basic.add", (i, i)).get(timeout=20) for i in range(5)] == \
                [0, 2, 4, 6, 8]
            return app.send_task("tests.apps.scenarios.patched_with").get(timeout=20)
        finally:
            app.close()
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("pool", GREEN)
def test_worker_main_from_a_script_patches_and_runs_tasks(pool, queue, home):
    """celery#8168: with Celery, tasks are received but hang; here they run."""
    seen = run_and_call([sys.executable, SCRIPT, "-P", pool, "-c", "20", "-l", "INFO"], queue, home)
    assert seen["patched"] == pool
    assert seen["socket_module"].startswith(pool)


def test_python_dash_m_greenq_patches_for_gevent(queue, home):
    seen = run_and_call([sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.scenarios",
                         "-P", "gevent", "-c", "20"], queue, home, kind="amqp")
    assert seen == {"patched": "gevent", "socket_module": "gevent._socket3"}


def test_the_greenq_command_patches_for_gevent(queue, home):
    command = shutil.which("greenq", path=os.path.dirname(sys.executable)) or shutil.which("greenq")
    if command is None:
        pytest.skip("the greenq console script is not installed in this environment")
    seen = run_and_call([command, "worker", "-A", "tests.apps.scenarios", "-P", "gevent", "-c", "20"],
                        queue, home, kind="embedded")
    assert seen["patched"] == "gevent"


def test_threads_pool_leaves_the_process_unpatched(queue, home):
    seen = run_and_call([sys.executable, SCRIPT, "-P", "threads", "-c", "2"], queue, home)
    assert seen == {"patched": None, "socket_module": "socket"}


@pytest.mark.parametrize("first", ["ssl", "requests", "redis,kombu"])
def test_a_process_that_imported_network_modules_first_is_refused(first, queue, home):
    broker_url, backend_url = broker_urls("embedded")
    proc = WorkerProcess([sys.executable, SCRIPT, "--import-first", first, "-P", "gevent"],
                         env_for(broker_url, backend_url, queue, home))
    code = proc.proc.wait(30)
    proc.stop()
    assert code == 2
    assert "must patch the process before these modules are imported, but they already were" in proc.log
    for name in first.split(","):
        assert name in proc.log.split("already were:")[1].split(".")[0]
    assert "ready: -P" not in proc.log


def test_strict_patching_can_be_turned_off(queue, home):
    broker_url, backend_url = broker_urls("embedded")
    env = {**env_for(broker_url, backend_url, queue, home), "GREENQ_STRICT_PATCHING": "0"}
    proc = WorkerProcess([sys.executable, SCRIPT, "--import-first", "ssl", "-P", "gevent", "-c", "5"], env)
    try:
        proc.wait_for_log(r"ready: -P gevent")
    finally:
        assert proc.stop() == 0


def test_declaring_an_app_and_tasks_imports_nothing_that_must_be_patched():
    import subprocess
    code = ("import sys, tests.apps.scenarios\n"
            "from greenq.pools import imported_too_early\n"
            "print(','.join(imported_too_early()) or 'nothing')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30,
                         env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout.strip()
    assert out == "nothing"
