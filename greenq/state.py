"""Worker state: revoked ids, counters.  Owned by the control loop."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections import Counter, OrderedDict
from typing import Any, Iterable, Iterator

logger = logging.getLogger("greenq.state")


class LimitedSet:
    """A set with a size limit and an age limit, oldest evicted first.

    Used for revoked task ids: bounded by ``worker_revokes_max`` entries and
    ``worker_revoke_expires`` seconds, as Celery's is.
    """

    def __init__(self, maxlen: int, expires: float | None) -> None:
        self.maxlen = maxlen
        self.expires = expires
        self._data: OrderedDict[str, float] = OrderedDict()

    def add(self, item: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._data.pop(item, None)
        self._data[item] = now
        self.purge(now)

    def update(self, items: Iterable[str], now: float | None = None) -> None:
        for item in items:
            self.add(item, now)

    def discard(self, item: str) -> None:
        self._data.pop(item, None)

    def purge(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        data = self._data
        while len(data) > self.maxlen:
            data.popitem(last=False)
        if self.expires:
            limit = now - self.expires
            while data:
                item, added = next(iter(data.items()))
                if added >= limit:
                    break
                data.popitem(last=False)

    def __contains__(self, item: object) -> bool:
        if item not in self._data:
            return False
        if self.expires and self._data[item] < time.time() - self.expires:  # type: ignore[index]
            self._data.pop(item)  # type: ignore[call-overload]
            return False
        return True

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def as_dict(self) -> dict[str, float]:
        return dict(self._data)

    def merge(self, entries: dict[str, float] | Iterable[str], now: float | None = None) -> None:
        """Add entries from another set (``hello``/``--statedb``), keeping their ages."""
        if isinstance(entries, dict):
            merged = dict(self._data)
            for item, added in entries.items():
                merged[item] = max(added, merged.get(item, added))
            # keep oldest-first order, which purge() relies on to evict the oldest
            self._data = OrderedDict(sorted(merged.items(), key=lambda kv: kv[1]))
            self.purge(now)
        else:
            self.update(entries, now)


class WorkerState:
    """What the control loop knows: running requests, counters, revoked ids."""

    def __init__(self, revokes_max: int = 50000, revoke_expires: float | None = 10800.0) -> None:
        self.active: dict[str, Any] = {}
        self.revoked = LimitedSet(revokes_max, revoke_expires)
        self.total: Counter[str] = Counter()
        self.rejected = 0
        self.parked = 0  # ETA tasks this worker parked broker-side
        self.started_at = time.time()

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self.revoked


class StateDB:
    """The worker's persistent state (``--statedb PATH``): the revoked ids,
    with the time each was revoked, and the Lamport clock, so a restarted
    worker still skips what was revoked before (for ``worker_revoke_expires``).

    A JSON file, replaced atomically (written beside it, then renamed), so a
    crash mid-write leaves the previous version.  An unreadable file is
    reported and set aside (``PATH.corrupt``), never fatal.
    """

    VERSION = 1

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))

    def load(self, state: WorkerState, clock: Any = None) -> int:
        """Merge the saved revoked ids into ``state``; returns how many were loaded."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            revoked = data["revoked"]
            if not isinstance(revoked, dict):
                raise ValueError("'revoked' is not a mapping")
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path + ".corrupt"
            logger.error("state db %s is unreadable (%s): moved to %s, starting with an empty revoked set",
                         self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return 0
        before = len(state.revoked)
        state.revoked.merge({str(k): float(v) for k, v in revoked.items()})
        if clock is not None and isinstance(data.get("clock"), int):
            clock.adjust(data["clock"])
        return len(state.revoked) - before

    def save(self, state: WorkerState, clock: Any = None) -> None:
        state.revoked.purge()
        data = {"version": self.VERSION, "revoked": state.revoked.as_dict(),
                "clock": clock.value if clock is not None else 0}
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".statedb-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
