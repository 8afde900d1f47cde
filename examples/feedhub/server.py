"""A local feed server: a simulated web of many sites, on 127.0.0.1 only.

    python -m examples.feedhub.server --port 8765 --latency 0.25 --error-rate 0.03

It is an HTTP *proxy* for the made-up domains ``site-000.example`` ...: point
a client's HTTP proxy at it (``FEEDHUB_PROXY=http://127.0.0.1:8765``) and
``GET http://site-017.example/feeds/3.xml`` reaches it with the site in the
``Host`` header, exactly as a request to a real site would look.  No DNS, no
hosts-file edits, and the crawler code is the same code that fetches real
feeds (``domain_of(url)`` is the real host name).

Every response waits ``latency`` seconds (uniformly spread by ``jitter``);
``--error-rate`` of requests answer 500/502/503 and ``--timeout-rate`` hang
for ``--hang`` seconds (longer than the crawler's timeout), both at random,
so a retry usually succeeds.  Some feeds are broken for good (see
:class:`examples.feedhub.feeds.WebShape`).  ``GET http://127.0.0.1:PORT/opml``
lists every feed, and ``/stats`` counts what was served.

The server runs on gevent (one green thread per connection), so a thousand
concurrent fetches cost it little CPU.  The first line on stdout is
``listening on http://127.0.0.1:<port>``.
"""
from __future__ import annotations

if __name__ == "__main__":  # patch before anything opens a socket
    from gevent import monkey
    monkey.patch_all()

import argparse
import collections
import json
import random
import signal
import sys
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from examples.feedhub.feeds import WebShape, feed_url, parse_feed_path


class FeedServer:
    """The WSGI app: feeds by Host and path, with latency and failures."""

    def __init__(self, shape: WebShape, latency: float = 0.25, jitter: float = 0.8,
                 error_rate: float = 0.03, timeout_rate: float = 0.01, hang: float = 10.0,
                 seed: int = 1) -> None:
        self.shape = shape
        self.latency = latency
        self.jitter = jitter
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.hang = hang
        self.random = random.Random(seed)
        self.cache: dict[tuple[int, int], tuple[bytes, str]] = {}
        self.stats: collections.Counter[str] = collections.Counter()

    def delay(self) -> float:
        spread = self.latency * self.jitter
        return max(0.0, self.random.uniform(self.latency - spread, self.latency + spread))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        import gevent
        path = environ.get("PATH_INFO") or "/"
        hostname = (environ.get("HTTP_HOST") or "").split(":")[0]
        if path.startswith("http://"):        # absolute form: we are the proxy
            parts = urlsplit(path)
            hostname, path = parts.hostname or hostname, parts.path
        if hostname in ("127.0.0.1", "localhost"):
            return self.local(path, start_response)
        self.stats["requests"] += 1
        located = parse_feed_path(hostname, path)
        if located is None or not (0 <= located[0] < self.shape.sites
                                   and 0 <= located[1] < self.shape.feeds_per_site):
            return self.respond(start_response, "404 Not Found", b"no such feed\n", "text/plain", "not_found")
        roll = self.random.random()
        if roll < self.timeout_rate:
            self.stats["hung"] += 1
            gevent.sleep(self.hang)
            return self.respond(start_response, "504 Gateway Timeout", b"too late\n", "text/plain", "late")
        gevent.sleep(self.delay())
        trait = self.shape.trait(*located)
        if trait == "missing":
            return self.respond(start_response, "404 Not Found", b"gone\n", "text/plain", "not_found")
        if trait == "dead" or roll < self.timeout_rate + self.error_rate:
            status = self.random.choice(("500 Internal Server Error", "502 Bad Gateway", "503 Service Unavailable"))
            return self.respond(start_response, status, b"try again later\n", "text/plain", "server_error")
        body, content_type = self.cache.get(located) or self.cache.setdefault(located, self.shape.body(*located))
        return self.respond(start_response, "200 OK", body, content_type, "malformed" if trait == "malformed" else "ok")

    def respond(self, start_response: Callable[..., Any], status: str, body: bytes, content_type: str,
                kind: str) -> list[bytes]:
        self.stats[kind] += 1
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "max-age=300")])
        return [body]

    def local(self, path: str, start_response: Callable[..., Any]) -> list[bytes]:
        if path == "/opml":
            outlines = "".join(f'<outline type="rss" xmlUrl="{feed_url(s, f)}"/>'
                               for f in range(self.shape.feeds_per_site) for s in range(self.shape.sites))
            body = (f'<?xml version="1.0"?><opml version="2.0"><head><title>feedhub</title></head>'
                    f"<body>{outlines}</body></opml>").encode()
            return self.respond(start_response, "200 OK", body, "text/x-opml", "opml")
        if path == "/stats":
            return self.respond(start_response, "200 OK", json.dumps(self.stats).encode(), "application/json", "stats")
        return self.respond(start_response, "404 Not Found", b"try /opml or /stats\n", "text/plain", "local_404")


def main(argv: list[str] | None = None) -> None:
    import gevent
    from gevent.pywsgi import WSGIServer

    parser = argparse.ArgumentParser(prog="python -m examples.feedhub.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port [8765]")
    parser.add_argument("--sites", type=int, default=WebShape.sites, help="number of domains [%(default)s]")
    parser.add_argument("--feeds-per-site", type=int, default=WebShape.feeds_per_site)
    parser.add_argument("--entries", type=int, default=WebShape.entries, help="entries per feed")
    parser.add_argument("--latency", type=float, default=0.25, help="mean seconds per response [%(default)s]")
    parser.add_argument("--jitter", type=float, default=0.8, help="latency spread, fraction of the mean")
    parser.add_argument("--error-rate", type=float, default=0.03, help="share of requests answering 5xx")
    parser.add_argument("--timeout-rate", type=float, default=0.01, help="share of requests that hang")
    parser.add_argument("--hang", type=float, default=10.0, help="seconds a hanging request takes")
    parser.add_argument("--malformed-rate", type=float, default=WebShape.malformed_rate)
    parser.add_argument("--dead-rate", type=float, default=WebShape.dead_rate, help="feeds that always 503")
    parser.add_argument("--missing-rate", type=float, default=WebShape.missing_rate, help="feeds that 404")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    shape = WebShape(sites=args.sites, feeds_per_site=args.feeds_per_site, entries=args.entries,
                     malformed_rate=args.malformed_rate, dead_rate=args.dead_rate,
                     missing_rate=args.missing_rate, seed=args.seed)
    app = FeedServer(shape, latency=args.latency, jitter=args.jitter, error_rate=args.error_rate,
                     timeout_rate=args.timeout_rate, hang=args.hang, seed=args.seed)
    server = WSGIServer(("127.0.0.1", args.port), app, log=None, error_log=None, backlog=2048)
    server.init_socket()
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop, 1)   # runs in a green thread, not in the signal handler
    started = time.monotonic()
    server.serve_forever()
    print(f"served {dict(app.stats)} in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
