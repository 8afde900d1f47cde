"""The ETA heap: every waiting ETA/countdown task in one heap, one timer.

The control loop holds due times here and asks :meth:`EtaHeap.pop_due` on
each tick; there is no green thread or timer per task.  Entries are removed
lazily: :meth:`discard` marks an id, and marked entries are skipped when
they reach the top.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Iterator

from greenq.protocol import Request


class EtaHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._discarded: set[int] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, request: Request, until: float) -> None:
        heapq.heappush(self._heap, (until, next(self._seq), request))
        self._count += 1

    def next_due(self) -> float | None:
        self._skip_discarded()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Request]:
        """Remove and return every request due at ``now``, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, request = heapq.heappop(heap)
            if id(request) in self._discarded:
                self._discarded.discard(id(request))
                continue
            self._count -= 1
            due.append(request)
        return due

    def discard(self, task_id: str) -> list[Request]:
        """Forget the held requests with this task id; returns them."""
        found = [r for _, _, r in self._heap if r.id == task_id and id(r) not in self._discarded]
        for request in found:
            self._discarded.add(id(request))
            self._count -= 1
        return found

    def drain(self) -> list[Request]:
        """Remove and return everything held (shutdown, reconnect)."""
        held = [r for _, _, r in sorted(self._heap) if id(r) not in self._discarded]
        self._heap.clear()
        self._discarded.clear()
        self._count = 0
        return held

    def __iter__(self) -> Iterator[tuple[float, Request]]:
        for until, _, request in sorted(self._heap):
            if id(request) not in self._discarded:
                yield until, request

    def _skip_discarded(self) -> None:
        heap = self._heap
        while heap and id(heap[0][2]) in self._discarded:
            _, _, request = heapq.heappop(heap)
            self._discarded.discard(id(request))
