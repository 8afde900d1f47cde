"""The feedhub app: fetch feeds on green threads, parse them in child processes.

    fetch_feed(url)          I/O-bound: one HTTP GET; thousands at once on gevent.
        -> parse_feed(url, body)   CPU-bound (feedparser): cpu=True, queue "parse";
                                   runs in --cpu-pool children or a -P prefork worker.
            -> entries stored in SQLite (examples/feedhub/store.py)

Retries: a 5xx, a timeout or a refused connection is retried up to 3 times
with exponential backoff and jitter; a 404 and malformed XML fail at once.
Every failure is stored as the task's result, so ``python -m examples.feedhub``
can count them by kind.

Politeness: at most ``FEEDHUB_PER_DOMAIN`` (2) requests in flight to one
domain from one worker process.  This is a stopgap kept deliberately small:
greenq's per-key rate limits (``@app.task(rate_limit=..., rate_limit_key=
domain_of)``) will hold such a message without occupying a green thread and
across workers; fetch_feed will use them when they land.

Configuration (environment): ``GREENQ_BROKER_URL`` (default: the embedded
broker), ``FEEDHUB_PROXY`` (the local feed server; unset fetches real
URLs directly), ``FEEDHUB_TIMEOUT`` (seconds, 2.0), ``FEEDHUB_PER_DOMAIN``,
``FEEDHUB_FETCH_QUEUE``/``FEEDHUB_PARSE_QUEUE`` ("feeds"/"parse"),
``FEEDHUB_DB`` (see store.py).
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
import xml.sax
from typing import Any, Iterator
from urllib.parse import urlsplit

import feedparser
import requests
from requests.adapters import HTTPAdapter

from examples.feedhub import store
from greenq import App

FETCH_QUEUE = os.environ.get("FEEDHUB_FETCH_QUEUE", "feeds")
PARSE_QUEUE = os.environ.get("FEEDHUB_PARSE_QUEUE", "parse")
TIMEOUT = float(os.environ.get("FEEDHUB_TIMEOUT", "2.0"))
PER_DOMAIN = int(os.environ.get("FEEDHUB_PER_DOMAIN", "2"))

_broker = os.environ.get("GREENQ_BROKER_URL")
app = App(
    "feedhub",
    # on Redis, keep results next to the queues unless told otherwise
    backend=os.environ.get("GREENQ_RESULT_BACKEND") or (_broker if _broker and _broker.startswith("redis") else None),
    task_queues=[FETCH_QUEUE, PARSE_QUEUE],
    task_default_queue=FETCH_QUEUE,
    task_routes={"feedhub.fetch_*": FETCH_QUEUE, "feedhub.parse_*": PARSE_QUEUE},
    result_expires=3600,
)


class FetchError(Exception):
    """The site answered with an error status."""


class ServerError(FetchError):
    """A 5xx answer: the site may recover, so the fetch is retried."""


class FeedGone(FetchError):
    """A 404 or 410: not retried."""


class MalformedFeed(Exception):
    """The document is not well-formed XML."""


def domain_of(url: str) -> str:
    """The politeness key: the URL's host name."""
    return (urlsplit(url).hostname or "").lower()


# ------------------------------------------------------------------ the I/O side
_session_lock = threading.Lock()
_session: requests.Session | None = None
_in_flight: collections.defaultdict[str, threading.BoundedSemaphore] = collections.defaultdict(
    lambda: threading.BoundedSemaphore(PER_DOMAIN))


def session() -> requests.Session:
    """One HTTP session per process, with a connection pool as large as the worker."""
    global _session
    with _session_lock:
        if _session is None:
            s = requests.Session()
            s.trust_env = False   # only FEEDHUB_PROXY, never a proxy from the environment
            adapter = HTTPAdapter(pool_connections=64, pool_maxsize=1024, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            proxy = os.environ.get("FEEDHUB_PROXY")
            if proxy:
                s.proxies = {"http": proxy}
            s.headers["User-Agent"] = "feedhub/0.1 (greenq example)"
            _session = s
        return _session


@contextlib.contextmanager
def polite(domain: str) -> Iterator[None]:
    """At most PER_DOMAIN requests in flight to ``domain`` from this process.

    Under gevent the semaphore is a green one: waiting yields to the others.
    """
    slot = _in_flight[domain]
    with slot:
        yield


@app.task(name="feedhub.fetch_feed", bind=True,
          autoretry_for=(ServerError, requests.Timeout, requests.ConnectionError),
          max_retries=3, retry_backoff=0.5, retry_backoff_max=4.0, retry_jitter=True)
def fetch_feed(self: Any, url: str) -> dict[str, Any]:
    """Fetch one feed and hand the document to parse_feed (task id: ``<this id>-parse``)."""
    with polite(domain_of(url)):
        response = session().get(url, timeout=TIMEOUT)
    if response.status_code >= 500:
        raise ServerError(f"HTTP {response.status_code} from {domain_of(url)}")
    if response.status_code >= 400:
        raise FeedGone(f"HTTP {response.status_code} for {url}")
    parse = parse_feed.apply_async((url, response.text), task_id=f"{self.request.id}-parse")
    return {"url": url, "bytes": len(response.content), "attempts": self.request.retries + 1, "parse_id": parse.id}


# ------------------------------------------------------------------ the CPU side
def _entry(feed_url: str, entry: Any) -> dict[str, Any]:
    guid = entry.get("id") or entry.get("link") or f"{feed_url}#{entry.get('title')}"
    return {"guid": guid, "title": entry.get("title"), "link": entry.get("link"),
            "published": entry.get("published") or entry.get("updated"), "author": entry.get("author"),
            "summary": entry.get("summary")}


@app.task(name="feedhub.parse_feed", cpu=True)
def parse_feed(url: str, body: str) -> dict[str, Any]:
    """Parse a feed with feedparser (CPU-bound) and store its entries."""
    parsed = feedparser.parse(body)
    if parsed.bozo and isinstance(parsed.bozo_exception, xml.sax.SAXException):
        raise MalformedFeed(f"{url}: {parsed.bozo_exception}")
    entries = [_entry(url, e) for e in parsed.entries]
    new = store.save(url, parsed.feed.get("title"), parsed.version, entries)
    return {"url": url, "entries": len(entries), "new": new, "format": parsed.version}
