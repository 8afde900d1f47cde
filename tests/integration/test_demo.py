"""The README's first command: examples/demo.py on the embedded default."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_on_the_embedded_default_and_prints_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py")], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "add.delay(2, 2).get() -> 4" in lines
    assert any(line.startswith("500 fetch tasks of 0.2 s each:") for line in lines)
    assert "divide.delay(1, 0).get() raised ZeroDivisionError: division by zero (state FAILURE)" in lines
    assert lines[-1].startswith("worker stopped (exit 0)")
    assert not os.path.exists(tmp_path / ".greenq"), "the demo must not write into the current directory"
