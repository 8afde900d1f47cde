"""Pure decisions, as tables with fixed timestamps: strategy.decide, EtaHeap, LimitedSet, rates."""
from __future__ import annotations

import pytest

from greenq.exceptions import ConfigurationError
from greenq.protocol import Request
from greenq.ratelimit import parse_rate
from greenq.scheduler import EtaHeap
from greenq.state import LimitedSet
from greenq.strategy import EXPIRED, REVOKED, RUN, WAIT, decide

pytestmark = pytest.mark.timeout(10)

NOW = 1_900_000_000.0  # a fixed epoch time


def req(task_id="a", eta=None, expires=None):
    return Request(id=task_id, name="t", eta=eta, expires=expires)


@pytest.mark.parametrize("eta, expires, revoked, action, until", [
    (None, None, False, RUN, None),
    (NOW - 5, None, False, RUN, None),            # ETA in the past: run now
    (NOW, None, False, RUN, None),                # due exactly now
    (NOW + 30, None, False, WAIT, NOW + 30),
    (None, NOW + 1, False, RUN, None),
    (None, NOW, False, EXPIRED, None),            # expiring now counts as expired
    (None, NOW - 1, False, EXPIRED, None),
    (NOW + 30, NOW - 1, False, EXPIRED, None),    # expired beats waiting
    (NOW + 30, NOW + 10, False, WAIT, NOW + 30),  # expires while waiting: decided again at release
    (None, NOW - 1, True, REVOKED, None),         # revoked beats expired
    (NOW + 30, None, True, REVOKED, None),
])
def test_decide(eta, expires, revoked, action, until):
    decision = decide(req(eta=eta, expires=expires), NOW, lambda task_id: revoked)
    assert (decision.action, decision.until) == (action, until)


def test_a_held_task_that_expired_while_waiting_is_expired_at_release():
    request = req(eta=NOW + 30, expires=NOW + 10)
    assert decide(request, NOW, lambda _: False).action == WAIT
    assert decide(request, NOW + 30, lambda _: False).action == EXPIRED


# ------------------------------------------------------------------ EtaHeap
def test_eta_heap_releases_in_due_order_and_only_when_due():
    heap = EtaHeap()
    for task_id, until in [("c", NOW + 3), ("a", NOW + 1), ("b", NOW + 2), ("a2", NOW + 1)]:
        heap.hold(req(task_id), until)
    assert len(heap) == 4 and heap.next_due() == NOW + 1
    assert heap.pop_due(NOW) == []
    assert [r.id for r in heap.pop_due(NOW + 1)] == ["a", "a2"]  # ties keep arrival order
    assert len(heap) == 2 and heap.next_due() == NOW + 2
    assert [r.id for r in heap.pop_due(NOW + 10)] == ["b", "c"]
    assert len(heap) == 0 and heap.next_due() is None


def test_eta_heap_discard_is_lazy_and_counted():
    heap = EtaHeap()
    heap.hold(req("a"), NOW + 1)
    heap.hold(req("b"), NOW + 2)
    heap.hold(req("b"), NOW + 3)  # the same id twice (a redelivery)
    assert [r.id for r in heap.discard("b")] == ["b", "b"]
    assert heap.discard("b") == []
    assert len(heap) == 1
    assert [r.id for _, r in heap] == ["a"]
    assert [r.id for r in heap.pop_due(NOW + 10)] == ["a"]
    assert len(heap) == 0


def test_eta_heap_skips_a_discarded_head_for_next_due():
    heap = EtaHeap()
    heap.hold(req("a"), NOW + 1)
    heap.hold(req("b"), NOW + 5)
    heap.discard("a")
    assert heap.next_due() == NOW + 5


def test_eta_heap_drain_returns_everything_held_in_order():
    heap = EtaHeap()
    heap.hold(req("late"), NOW + 9)
    heap.hold(req("gone"), NOW + 2)
    heap.hold(req("soon"), NOW + 1)
    heap.discard("gone")
    assert [r.id for r in heap.drain()] == ["soon", "late"]
    assert len(heap) == 0 and heap.next_due() is None


# ------------------------------------------------------------------ LimitedSet
def test_limited_set_evicts_the_oldest_beyond_its_size():
    revoked = LimitedSet(maxlen=3, expires=None)
    for index, item in enumerate("abcd"):
        revoked.add(item, now=NOW + index)
    assert list(revoked) == ["b", "c", "d"]
    assert "a" not in revoked and "d" in revoked


def test_limited_set_re_adding_refreshes_the_age():
    revoked = LimitedSet(maxlen=2, expires=None)
    revoked.add("a", now=NOW)
    revoked.add("b", now=NOW + 1)
    revoked.add("a", now=NOW + 2)
    revoked.add("c", now=NOW + 3)
    assert list(revoked) == ["a", "c"]


def test_limited_set_forgets_entries_older_than_expires():
    revoked = LimitedSet(maxlen=100, expires=60)
    revoked.add("old", now=NOW)
    revoked.add("new", now=NOW + 50)
    revoked.purge(now=NOW + 61)
    assert list(revoked) == ["new"]
    assert len(revoked) == 1


def test_limited_set_merge_keeps_the_ages_it_is_given():
    revoked = LimitedSet(maxlen=3, expires=100)
    revoked.add("mine", now=NOW)
    revoked.merge({"theirs-new": NOW + 5, "theirs-old": NOW - 200, "theirs-mid": NOW - 10}, now=NOW)
    assert "theirs-old" not in list(revoked)  # already past the age limit
    assert revoked.as_dict()["theirs-mid"] == NOW - 10
    assert set(revoked) == {"mine", "theirs-new", "theirs-mid"}


# ------------------------------------------------------------------ rates
@pytest.mark.parametrize("rate, per_second", [
    (None, None), (0, None), ("0", None), ("10/s", 10.0), ("120/m", 2.0), ("3600/h", 1.0),
    ("5", 5.0), (2.5, 2.5), (" 10 / s ", 10.0),
])
def test_parse_rate(rate, per_second):
    assert parse_rate(rate) == per_second


@pytest.mark.parametrize("rate", ["ten/s", "10/d", "10/minute", True, [10], -3])
def test_parse_rate_refuses_nonsense(rate):
    with pytest.raises(ConfigurationError):
        parse_rate(rate)
