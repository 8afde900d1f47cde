"""The tox environment is what it says: patched by gevent/eventlet, or not at all."""
from __future__ import annotations

import os

import pytest

from greenq.pools import patched_with

pytestmark = pytest.mark.timeout(10)


def test_the_process_is_patched_as_the_environment_promises():
    expected = os.environ.get("GREENQ_TEST_EXPECT_PATCHED") or None
    assert patched_with() == expected
    if expected:
        import socket
        assert socket.socket.__module__.startswith(expected)
