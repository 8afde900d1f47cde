"""pool.kill_threadsafe from a native thread reaches a green thread that never yields."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)

SCRIPT = textwrap.dedent("""
    import sys
    from greenq.pools import patch
    patch(sys.argv[1])
    import time
    from greenq.exceptions import Terminated
    from greenq.pools import create_pool

    pool = create_pool(sys.argv[1], 10)
    pool.start()
    outcome = []

    def spin(request):
        try:
            while True:
                pass
        except Terminated:
            outcome.append("terminated")

    def idle(request):
        try:
            pool.sleep(30)
        except Terminated:
            outcome.append("idle terminated")

    busy = pool.spawn(spin, None)
    waiting = pool.spawn(idle, None)

    def control():  # the control plane's thread
        time.sleep(0.8)  # original sleep: this is a native thread
        print("spinning:", pool.kill_threadsafe(busy, Terminated), flush=True)

    pool.start_native_thread(control, "control")
    pool.sleep(0.1)
    pool.join(5)
    print("outcome:", outcome, flush=True)
""")


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_kill_threadsafe_ends_a_task_that_holds_the_hub(pool, tmp_path):
    if importlib.util.find_spec(pool) is None:
        pytest.skip(f"{pool} is not installed")
    script = tmp_path / "kill.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(script), pool], capture_output=True, text=True, timeout=40, env=env)
    assert "spinning: True" in run.stdout, run.stdout + run.stderr
    assert "outcome: ['terminated']" in run.stdout, run.stdout + run.stderr
