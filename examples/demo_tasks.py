"""Tasks for examples/demo.py.  No broker configured: greenq uses its embedded
default (a directory of files plus SQLite), so nothing else needs to run."""
from __future__ import annotations

import time

from greenq import App

app = App("demo")


@app.task
def add(x, y):
    return x + y


@app.task
def fetch(page):
    """Stands in for an HTTP request: waits 0.2 s, as a network call would."""
    time.sleep(0.2)  # under -P gevent this sleep yields to the other green threads
    return f"page {page}: {len(str(page)) * 100} bytes"


@app.task
def divide(x, y):
    return x / y
