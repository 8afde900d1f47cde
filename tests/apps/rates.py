"""Rate-limited tasks, on tests.apps.basic's app (queue from GREENQ_TEST_QUEUE)."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

from tests.apps.basic import app  # noqa: F401  (-A tests.apps.rates finds it)


@app.task(rate_limit="1/s")
def slow_lane(n):
    """Limited to one a second: a backlog of these must not hold up `fast`."""
    return n


@app.task
def fast(n):
    return time.time()


@app.task(rate_limit="5/s")
def five_a_second(n):
    return time.time()


def domain(url):
    return urlsplit(url).hostname


@app.task(rate_limit="2/s", rate_limit_key=domain)
def fetch(url):
    """A crawler's politeness: two a second per domain, domains independent."""
    return {"domain": domain(url), "at": time.time()}


@app.task(rate_limit="2/s", rate_limit_key=lambda url: 1 / 0)
def bad_key(url):
    return url
