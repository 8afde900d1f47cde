"""The hub monitor's decisions, with a fake clock and fake greenlets (no threads)."""
from __future__ import annotations

import pytest

from greenq.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from greenq.pools import monitor as monitor_module
from greenq.pools.monitor import GRACE, PERIOD, HubMonitor

pytestmark = pytest.mark.timeout(10)


class FakeGreenlet:
    def __init__(self, running=False):
        self.gr_frame = None if running else object()
        self.dead = False

    def __bool__(self):
        return True


class Request:
    name, id = "proj.crunch", "id-1"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def setup(monkeypatch):
    raised = []
    monkeypatch.setattr(monitor_module, "raise_in_thread", lambda ident, exc: raised.append((ident, exc)))
    clock = Clock()
    mon = HubMonitor(lambda target, name: None, lambda s: None, main_ident=42, blocking_threshold=1.0,
                     stuck_exit_after=5.0, clock=clock)
    return mon, clock, raised


def advance(mon, clock, seconds, hub_turning=False):
    """Let ``seconds`` pass in monitor periods; the hub ticks only if turning."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now += PERIOD
        if hub_turning:
            mon.tick()
        mon.check()


def test_a_turning_hub_is_never_reported_or_interrupted(setup):
    mon, clock, raised = setup
    greenlet = FakeGreenlet(running=True)
    mon.task_started(greenlet, Request())
    mon.set_limits(greenlet, None, 1.0)
    advance(mon, clock, 5.0, hub_turning=True)
    assert raised == [] and mon.blocking_count == 0


def test_a_task_holding_the_hub_is_reported_once_then_its_hard_limit_is_raised_in_it(setup):
    mon, clock, raised = setup
    greenlet = FakeGreenlet(running=True)
    mon.task_started(greenlet, Request())
    mon.set_limits(greenlet, 0.5, 2.0)
    advance(mon, clock, 1.2)  # blocked > threshold, past soft + grace
    assert mon.blocking_count == 1 and mon.last_blocking["id"] == "id-1"
    assert raised == [(42, SoftTimeLimitExceeded)]
    advance(mon, clock, 1.2 + GRACE)  # past hard + grace
    assert raised[-1] == (42, HardTimeLimit)
    assert mon.blocking_count == 1  # one report per blocked episode
    assert mon.stats()["escalations"] == 2


def test_nothing_is_raised_into_a_greenlet_that_is_not_the_one_running(setup):
    mon, clock, raised = setup
    waiting = FakeGreenlet(running=False)
    mon.task_started(waiting, Request())
    mon.set_limits(waiting, None, 0.5)
    advance(mon, clock, 3.0)
    assert raised == []
    assert mon.blocking_count == 1 and mon.last_blocking["task"] is None  # blocked by the worker's own code


def test_still_blocked_after_the_hard_limit_calls_on_stuck_once(setup):
    mon, clock, raised = setup
    stuck = []
    mon.on_stuck = stuck.append
    greenlet = FakeGreenlet(running=True)
    request = Request()
    mon.task_started(greenlet, request)
    mon.set_limits(greenlet, None, 1.0)
    advance(mon, clock, 1.0 + GRACE + 0.1)
    assert raised == [(42, HardTimeLimit)] and stuck == []
    advance(mon, clock, 6.0)
    assert stuck == [request]


def test_stuck_exit_can_be_turned_off(setup):
    mon, clock, raised = setup
    mon.stuck_exit_after = None
    stuck = []
    mon.on_stuck = stuck.append
    greenlet = FakeGreenlet(running=True)
    mon.task_started(greenlet, Request())
    mon.set_limits(greenlet, None, 1.0)
    advance(mon, clock, 20.0)
    assert stuck == [] and raised == [(42, HardTimeLimit)]


def test_blocking_reports_can_be_turned_off(setup):
    mon, clock, _ = setup
    mon.blocking_threshold = None
    mon.task_started(FakeGreenlet(running=True), Request())
    advance(mon, clock, 5.0)
    assert mon.blocking_count == 0
