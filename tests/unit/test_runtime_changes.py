"""Run-time changes the remote-control commands apply in the control loop."""
from __future__ import annotations

import time

import pytest

import greenq
from greenq.exceptions import ConfigurationError, NotRegistered
from greenq.protocol import Request
from greenq.worker import Worker

pytestmark = pytest.mark.timeout(30)


class FakeMessage:
    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True


@pytest.fixture
def worker(tmp_path):
    app = greenq.App("rt", broker=f"embedded://{tmp_path}", backend=f"embedded://{tmp_path}")

    @app.task(name="rt.slow")
    def slow():
        return 1

    return Worker(app, pool="threads", concurrency=2, install_signal_handlers=False)


def held(worker: Worker, task_id: str, delay: float) -> Request:
    request = Request(id=task_id, name="rt.slow", eta=time.time() + delay, message=FakeMessage(),
                      task=worker.app.tasks["rt.slow"])
    worker.decide_and_act(request, time.time())
    return request


def test_revoke_settles_a_held_eta_task_at_once(worker):
    request = held(worker, "a", 3600)
    other = held(worker, "b", 3600)
    assert len(worker.eta) == 2
    assert worker.revoke(["a"]) == []
    worker.run_pending_calls()  # the ack and REVOKED record: the loop's next tick
    assert len(worker.eta) == 1 and request.message.acked and not other.message.acked
    assert worker.app.AsyncResult("a").state == "REVOKED"
    assert worker.state.is_revoked("a")


def test_scheduled_lists_held_tasks_soonest_first(worker):
    held(worker, "late", 7200)
    held(worker, "soon", 60)
    listed = worker.scheduled()
    assert [entry["request"]["id"] for entry in listed] == ["soon", "late"]
    assert listed[0]["eta"].endswith("+00:00") and listed[0]["request"]["name"] == "rt.slow"


def test_rate_and_time_limits_change_and_bad_values_are_refused(worker):
    worker.set_rate_limit("rt.slow", "5/s")
    assert worker.app.tasks["rt.slow"].rate_limit == "5/s"
    worker.set_time_limit("rt.slow", soft=1, hard=2)
    task = worker.app.tasks["rt.slow"]
    assert (task.soft_time_limit, task.time_limit) == (1, 2)
    with pytest.raises(ConfigurationError, match="rate limit"):
        worker.set_rate_limit("rt.slow", "fast")
    with pytest.raises(ConfigurationError, match="less than"):
        worker.set_time_limit("rt.slow", soft=3, hard=2)
    with pytest.raises(NotRegistered, match="rt.nope"):
        worker.set_rate_limit("rt.nope", 1)


def test_custom_commands_are_registered_and_their_arguments_checked(worker):
    from greenq.control import COMMANDS, ControlError, State, control_command, parse_cli_arguments, run_command

    @control_command(args=[("n", int)], help="Set the batch size.")
    def set_batch_for_test(state, n):
        state.worker.batch_for_test = n
        return {"ok": f"batch is now {n}"}

    try:
        class Plane:
            pass
        plane = Plane()
        plane.worker = worker
        state = State(plane)
        assert run_command(state, "set_batch_for_test", {"n": 5}) == {"ok": "batch is now 5"}
        assert worker.batch_for_test == 5
        assert parse_cli_arguments("set_batch_for_test", ["7"]) == {"n": 7}
        with pytest.raises(ControlError, match="n must be int"):
            parse_cli_arguments("set_batch_for_test", ["seven"])
        with pytest.raises(ControlError, match="missing a required argument"):
            run_command(state, "set_batch_for_test", {})
        assert COMMANDS["set_batch_for_test"].type == "control"
    finally:
        COMMANDS.pop("set_batch_for_test", None)


def test_the_live_event_view_tracks_workers_and_tasks():
    from greenq.events import EventView

    view = EventView(max_tasks=2)
    view.update({"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0, "active": 1, "processed": 9})
    for n, kind in enumerate(["task-received", "task-started", "task-succeeded"]):
        view.update({"type": kind, "hostname": "w@h", "uuid": "t1", "name": "feeds.fetch", "runtime": 0.25,
                     "timestamp": n})
    view.update({"type": "task-failed", "hostname": "w@h", "uuid": "t2", "timestamp": 5})
    view.update({"type": "task-received", "hostname": "w@h", "uuid": "t3", "name": "x", "timestamp": 6})
    text = view.render()
    assert "w@h" in text and "ONLINE" in text and "processed 9" in text
    assert "t1" not in text and "t2" in text and "t3" in text  # the most recent two
    view.update({"type": "worker-offline", "hostname": "w@h"})
    assert "OFFLINE" in view.render()
