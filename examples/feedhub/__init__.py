"""feedhub: a feed crawler on greenq (see docs/feedhub.md).

Fetching runs on gevent green threads, parsing (feedparser) in child
processes, entries go to SQLite.  ``python -m examples.feedhub`` runs it all.
"""
