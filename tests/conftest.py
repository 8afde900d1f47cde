from __future__ import annotations

import pytest

from tests.support import AMQP_URL, REDIS_URL, _reachable, broker_urls, unique


@pytest.fixture
def home(tmp_path):
    """A private embedded data directory."""
    return str(tmp_path / "greenq-home")


@pytest.fixture
def queue():
    """A queue name no other test uses, deleted from Redis and RabbitMQ afterwards."""
    name = unique("q")
    yield name
    from tests.integration.helpers import drop_queue
    for url in (REDIS_URL, AMQP_URL):
        if _reachable(url):
            try:
                drop_queue(url, name)
            except Exception as exc:  # cleanup must not hide the test's own result
                print(f"could not delete queue {name} on {url}: {exc!r}")


@pytest.fixture(params=["embedded", "redis", "amqp"])
def broker(request):
    """(kind, broker_url, result_backend) for each broker the suite runs against."""
    return (request.param, *broker_urls(request.param))


@pytest.fixture(autouse=True)
def _isolated_greenq_home(monkeypatch, tmp_path):
    # Never let a test touch ./.greenq of the checkout or of another test.
    monkeypatch.setenv("GREENQ_HOME", str(tmp_path / "default-home"))
