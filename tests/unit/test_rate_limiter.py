"""The control loop's rate limiter: buckets per task and per key, release order, bounds."""
from __future__ import annotations

import time

import pytest

from greenq import App
from greenq.exceptions import ConfigurationError
from greenq.protocol import Request
from greenq.ratelimit import RateLimiter

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app():
    app = App("rl", broker="memory://", backend="disabled://")

    @app.task(name="rl.limited", rate_limit="20/s")
    def limited(n):
        return n

    @app.task(name="rl.free")
    def free(n):
        return n

    @app.task(name="rl.per_domain", rate_limit="10/s", rate_limit_key=lambda url: url.split("/")[2])
    def per_domain(url):
        return url

    return app


def req(app, name, *args, id=None):
    return Request(id=id or f"{name}-{args}", name=name, args=list(args), kwargs={}, task=app.tasks[name])


def test_unlimited_tasks_are_always_admitted(app):
    limiter = RateLimiter(app)
    assert all(limiter.admit(req(app, "rl.free", n)) for n in range(1000))
    assert limiter.held == 0 and limiter.next_due() is None


def test_a_limited_task_is_held_then_released_in_order_at_its_rate(app):
    limiter = RateLimiter(app)
    requests = [req(app, "rl.limited", n) for n in range(5)]
    admitted = [limiter.admit(r) for r in requests]
    assert admitted == [True, False, False, False, False]  # one token to start with
    assert limiter.held == 4
    assert 0 < limiter.next_due() <= 0.05 + 0.001
    released = []
    deadline = time.monotonic() + 2
    while len(released) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
        released += limiter.release()
    assert released == requests[1:]  # first in, first out
    assert limiter.held == 0 and limiter.next_due() is None


def test_a_new_request_queues_behind_waiting_ones_even_if_a_token_came(app):
    limiter = RateLimiter(app)
    first, second, third = (req(app, "rl.limited", n) for n in range(3))
    assert limiter.admit(first) and not limiter.admit(second)
    time.sleep(0.06)  # a token has come, but `second` waits for it
    assert not limiter.admit(third)
    assert limiter.release() == [second]


def test_each_key_has_its_own_bucket(app):
    limiter = RateLimiter(app)
    a = [req(app, "rl.per_domain", f"http://a.example/{n}") for n in range(3)]
    b = [req(app, "rl.per_domain", f"http://b.example/{n}") for n in range(3)]
    assert [limiter.admit(r) for r in a] == [True, False, False]
    assert [limiter.admit(r) for r in b] == [True, False, False]
    assert limiter.info()["buckets"] == {"rl.per_domain": 2}


def test_keys_are_bounded_dropping_idle_buckets_first(app):
    limiter = RateLimiter(app, max_keys=3)
    waiting = req(app, "rl.per_domain", "http://busy.example/2")
    assert limiter.admit(req(app, "rl.per_domain", "http://busy.example/1"))
    assert not limiter.admit(waiting)
    for n in range(10):
        limiter.admit(req(app, "rl.per_domain", f"http://d{n}.example/"))
    assert limiter.info()["buckets"]["rl.per_domain"] == 3
    assert waiting in limiter.waiting()  # a bucket with a waiting request is never dropped


def test_a_failing_key_function_shares_the_task_bucket_and_is_reported_once(app, caplog):
    @app.task(name="rl.bad", rate_limit="1/s", rate_limit_key=lambda url: {}[url])
    def bad(url):
        return url

    limiter = RateLimiter(app)
    assert limiter.admit(req(app, "rl.bad", "x"))
    assert not limiter.admit(req(app, "rl.bad", "y"))
    assert not limiter.admit(req(app, "rl.bad", "z"))
    assert len([r for r in caplog.records if "rate_limit_key failed" in r.getMessage()]) == 1


def test_changed_rate_returns_the_waiting_requests(app):
    limiter = RateLimiter(app)
    requests = [req(app, "rl.limited", n) for n in range(4)]
    for r in requests:
        limiter.admit(r)
    assert limiter.changed("rl.limited") == requests[1:]
    assert limiter.held == 0 and limiter.next_due() is None


def test_discard_and_drain(app):
    limiter = RateLimiter(app)
    requests = [req(app, "rl.limited", n, id=f"id{n}") for n in range(4)]
    for r in requests:
        limiter.admit(r)
    assert limiter.discard({"id2"}) == [requests[2]]
    assert limiter.held == 2
    assert limiter.drain() == [requests[1], requests[3]]
    assert limiter.held == 0


def test_disabled_rate_limits_admit_everything(app):
    limiter = RateLimiter(app, disabled=True)
    assert all(limiter.admit(req(app, "rl.limited", n)) for n in range(100))


def test_bad_key_option_and_scope_are_refused_at_declaration(app):
    with pytest.raises(ConfigurationError, match="rate_limit_key must be a function"):
        app.task(name="rl.x", rate_limit="1/s", rate_limit_key="domain")(lambda url: url)
    with pytest.raises(ConfigurationError, match="rate_limit_scope must be 'worker'"):
        app.task(name="rl.y", rate_limit="1/s", rate_limit_scope="cluster")(lambda url: url)
