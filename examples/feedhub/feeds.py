"""Realistic RSS 2.0 and Atom feeds for the local feed server, generated
deterministically from (seed, site, feed) so that every run -- and every
pool being compared -- fetches exactly the same bytes.

The simulated web has ``sites`` domains, ``site-000.example`` ...; each has
``feeds_per_site`` feeds at ``/feeds/<n>.xml``.  Some feeds are broken on
purpose, also deterministically: malformed XML, always 503 ("dead"), 404
("missing").  Transient trouble (a 5xx, a hang) is decided per request by the
server.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from xml.sax.saxutils import escape

WORDS = (
    "market city council river bridge election storm harvest museum library festival railway "
    "station harbour energy solar wind water school teacher student science research budget "
    "hospital doctor nurse football league final season record artist album concert theatre "
    "film review garden weather forecast coast mountain village airport flight traffic road "
    "policy minister report survey data software release security update open source community "
    "volunteer charity award winner local national global economy trade price housing rent "
    "climate ocean forest wildlife park trail history archive photo interview opinion letter"
).split()


@dataclass(frozen=True)
class WebShape:
    """The simulated web: how many sites and feeds, and which feeds are broken."""

    sites: int = 200
    feeds_per_site: int = 10
    entries: int = 10
    malformed_rate: float = 0.01
    dead_rate: float = 0.005
    missing_rate: float = 0.005
    seed: int = 1

    def urls(self) -> list[str]:
        """Every feed URL, interleaved across sites (as a crawl frontier would be)."""
        return [feed_url(site, feed) for feed in range(self.feeds_per_site) for site in range(self.sites)]

    def trait(self, site: int, feed: int) -> str:
        """'ok', 'malformed', 'dead' or 'missing' for one feed (stable for a seed)."""
        roll = _rng(self.seed, "trait", site, feed).random()
        if roll < self.missing_rate:
            return "missing"
        roll -= self.missing_rate
        if roll < self.dead_rate:
            return "dead"
        roll -= self.dead_rate
        if roll < self.malformed_rate:
            return "malformed"
        return "ok"

    def body(self, site: int, feed: int) -> tuple[bytes, str]:
        """(document, content type) of a feed."""
        rng = _rng(self.seed, "body", site, feed)
        atom = rng.random() < 0.3
        doc = (atom_feed if atom else rss_feed)(rng, site, feed, self.entries)
        if self.trait(site, feed) == "malformed":
            doc = _break(rng, doc)
        kind = "application/atom+xml" if atom else "application/rss+xml"
        return doc.encode("utf-8"), f"{kind}; charset=utf-8"


def host(site: int) -> str:
    return f"site-{site:03d}.example"


def feed_url(site: int, feed: int) -> str:
    return f"http://{host(site)}/feeds/{feed}.xml"


def parse_feed_path(hostname: str, path: str) -> tuple[int, int] | None:
    """(site, feed) for ``site-NNN.example`` + ``/feeds/F.xml``, else None."""
    if not (hostname.startswith("site-") and hostname.endswith(".example")):
        return None
    if not (path.startswith("/feeds/") and path.endswith(".xml")):
        return None
    try:
        return int(hostname[5:-8]), int(path[7:-4])
    except ValueError:
        return None


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize()


def _summary(rng: random.Random, site: int) -> str:
    paragraphs = []
    for _ in range(rng.randint(1, 3)):
        text = _sentence(rng, 20, 50)
        word = rng.choice(WORDS)
        text = text.replace(f" {word} ", f' <a href="http://{host(site)}/tag/{word}">{word}</a> ', 1)
        paragraphs.append(f"<p>{text}. <em>{_sentence(rng, 3, 8)}</em>.</p>")
    return "".join(paragraphs)


def _dates(rng: random.Random, count: int) -> list[datetime]:
    now = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    minutes = sorted(rng.randint(0, 60 * 24 * 30) for _ in range(count))
    return [now - timedelta(minutes=m) for m in minutes]


def rss_feed(rng: random.Random, site: int, feed: int, entries: int) -> str:
    base = f"http://{host(site)}"
    items = []
    for n, date in enumerate(_dates(rng, entries)):
        categories = "".join(f"<category>{rng.choice(WORDS)}</category>" for _ in range(rng.randint(1, 3)))
        items.append(
            f"<item><title>{escape(_sentence(rng, 4, 10))}</title>"
            f"<link>{base}/posts/{feed}-{n}.html</link>"
            f'<guid isPermaLink="false">{host(site)}/{feed}/{n}</guid>'
            f"<pubDate>{format_datetime(date)}</pubDate>"
            f"<author>editor@{host(site)} ({escape(_sentence(rng, 2, 2))})</author>{categories}"
            f"<description>{escape(_summary(rng, site))}</description></item>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            f"<title>{escape(_sentence(rng, 2, 5))} - {host(site)}</title><link>{base}/</link>"
            f"<description>{escape(_sentence(rng, 8, 16))}</description><language>en</language>"
            f'<atom:link href="{base}/feeds/{feed}.xml" rel="self" type="application/rss+xml"/>'
            + "".join(items) + "</channel></rss>\n")


def atom_feed(rng: random.Random, site: int, feed: int, entries: int) -> str:
    base = f"http://{host(site)}"
    dates = _dates(rng, entries)
    items = []
    for n, date in enumerate(dates):
        items.append(
            f"<entry><title>{escape(_sentence(rng, 4, 10))}</title>"
            f'<link rel="alternate" href="{base}/posts/{feed}-{n}.html"/>'
            f"<id>tag:{host(site)},2026:{feed}/{n}</id><updated>{date.isoformat()}</updated>"
            f"<author><name>{escape(_sentence(rng, 2, 2))}</name></author>"
            f'<category term="{rng.choice(WORDS)}"/>'
            f'<summary type="html">{escape(_summary(rng, site))}</summary></entry>')
    updated = max(dates).isoformat() if dates else "2026-11-01T12:00:00+00:00"
    return ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{escape(_sentence(rng, 2, 5))} - {host(site)}</title>"
            f'<link rel="self" href="{base}/feeds/{feed}.xml"/><id>tag:{host(site)},2026:{feed}</id>'
            f"<updated>{updated}</updated>" + "".join(items) + "</feed>\n")


def _break(rng: random.Random, doc: str) -> str:
    """Malformed XML, the way real feeds break: an unclosed tag, a bare
    ampersand, a document cut off mid-way."""
    cut = doc[: int(len(doc) * rng.uniform(0.3, 0.7))]
    return cut.replace("</title>", " & <b>breaking</title>", 1) + "<item><title>unterminated"
