"""Rate limits in a running worker, on Redis and RabbitMQ.

The limiter holds a rate-limited request in its bucket, outside the pool,
so other task types are served at once (Celery's #8119 starves them).
"""
from __future__ import annotations

import time

import pytest

from tests.integration.helpers import drop_queue
from tests.support import broker_urls, client_app, unique, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(params=["redis", "amqp"])
def running(request, tmp_path):
    broker, backend = broker_urls(request.param)
    queue = unique("q")
    home = str(tmp_path)
    with worker("tests.apps.rates", broker=broker, backend=backend, pool="gevent", concurrency=20,
                queue=queue, home=home) as proc:
        app = client_app(broker, backend, queue=queue, home=home)
        try:
            yield proc, app
        finally:
            app.close()
    drop_queue(broker, queue)


def send(app, name, *args, **options):
    return app.send_task(f"tests.apps.rates.{name}", args, **options)


def test_a_backlog_of_a_rate_limited_task_does_not_hold_up_other_tasks(running):
    proc, app = running
    backlog = [send(app, "slow_lane", n, ignore_result=True) for n in range(2000)]
    time.sleep(1.0)  # the worker has reserved the backlog's head by now
    sent = time.time()
    fast = [send(app, "fast", n) for n in range(20)]
    finished = [r.get(timeout=20) for r in fast]
    assert max(finished) - sent < 5.0, "fast tasks waited behind the rate-limited backlog"
    assert len(backlog) == 2000
    assert "Traceback" not in proc.log


def test_observed_rate_follows_the_limit(running):
    proc, app = running
    results = [send(app, "five_a_second", n) for n in range(40)]
    times = sorted(r.get(timeout=30) for r in results[:25])
    # 25 tasks at 5/s: the first one at once, then one every 0.2 s
    span = times[-1] - times[0]
    assert 4.4 <= span <= 6.0, f"25 tasks at 5/s took {span:.2f}s"
    # no burst: the bucket's half token of slack lets one task follow a late one
    # closely, but never three within one interval (0.2 s)
    spans = [c - a for a, c in zip(times, times[2:])]
    assert min(spans) >= 0.2, f"three tasks within {min(spans):.3f}s: a burst"


def test_each_domain_has_its_own_bucket(running):
    proc, app = running
    urls = [f"http://{d}.example/{n}" for n in range(6) for d in ("a", "b", "c")]
    results = [send(app, "fetch", url) for url in urls]
    rows = [r.get(timeout=30) for r in results]
    by_domain: dict[str, list[float]] = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row["at"])
    for domain, times in by_domain.items():
        times.sort()
        span = times[-1] - times[0]
        assert 2.0 <= span <= 4.0, f"{domain}: 6 calls at 2/s took {span:.2f}s"
    starts = sorted(times[0] for times in by_domain.values())
    assert starts[-1] - starts[0] < 1.0, "domains waited for each other"


def test_a_failing_key_function_still_runs_the_task(running):
    proc, app = running
    assert send(app, "bad_key", "http://x.example/").get(timeout=20) == "http://x.example/"
    proc.wait_for_log("rate_limit_key failed")


@pytest.mark.timeout(30)
def test_a_global_rate_is_shared_by_every_worker():
    """Two limiters (as two workers would have) share one Redis bucket at 10/s."""
    from greenq import App
    from greenq.protocol import Request
    from greenq.ratelimit import RateLimiter
    from tests.support import require

    url = require("redis")
    prefix = unique("rl") + ":"
    limiters, apps = [], []
    for n in range(2):
        app = App(f"w{n}", broker=url, backend="disabled://", rate_limit_key_prefix=prefix)
        app.task(name="g.crawl", rate_limit="10/s", rate_limit_scope="global",
                 rate_limit_key=lambda url: url.split("/")[2])(lambda url: url)
        apps.append(app)
        limiters.append(RateLimiter(app))
    ran = 0
    for n in range(200):  # 100 requests to each worker, all for one domain
        limiter, app = limiters[n % 2], apps[n % 2]
        request = Request(id=str(n), name="g.crawl", args=[f"http://one.example/{n}"], task=app.tasks["g.crawl"])
        ran += limiter.admit(request)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        ran += sum(len(limiter.release()) for limiter in limiters)
        time.sleep(0.01)
    # 3 s at 10/s between both workers, plus the first token
    assert 28 <= ran <= 33, f"{ran} ran in 3 s at a global 10/s"
    from tests.integration.helpers import redis_client
    client = redis_client(url)
    keys = client.keys(prefix + "*")
    assert keys == [f"{prefix}g.crawl:one.example".encode()]
    client.delete(*keys)
    client.close()


def test_global_scope_without_redis_is_a_clear_error():
    from greenq import App
    from greenq.exceptions import ConfigurationError
    from greenq.protocol import Request
    from greenq.ratelimit import RateLimiter

    app = App("nore", broker="memory://", backend="disabled://")
    task = app.task(name="g.x", rate_limit="1/s", rate_limit_scope="global")(lambda: None)
    with pytest.raises(ConfigurationError, match="rate_limit_redis_url"):
        RateLimiter(app).check()  # what the worker calls as it starts
    with pytest.raises(ConfigurationError, match="rate_limit_redis_url"):
        RateLimiter(app).admit(Request(id="1", name="g.x", task=task))
