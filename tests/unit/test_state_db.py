"""--statedb: the revoked set survives a restart, keeps its ages, and a bad file is set aside."""
from __future__ import annotations

import json
import time

import pytest
from kombu.clocks import LamportClock

from greenq import App
from greenq.state import StateDB, WorkerState
from greenq.worker import Worker

pytestmark = pytest.mark.timeout(30)


def test_revoked_ids_and_the_clock_survive_a_restart(tmp_path):
    path = str(tmp_path / "worker.state")
    app = App("sdb", broker="memory://", backend="disabled://")
    first = Worker(app, pool="threads", concurrency=1, state_db=path, install_signal_handlers=False)
    first.revoke(["a", "b"])
    first.clock.adjust(41)
    first.save_state()

    second = Worker(app, pool="threads", concurrency=1, state_db=path, install_signal_handlers=False)
    assert StateDB(path).load(second.state, second.clock) == 2
    assert second.state.is_revoked("a") and second.state.is_revoked("b")
    assert not second.state.is_revoked("c")
    assert second.clock.value >= 42


def test_ages_are_kept_so_old_revokes_still_expire(tmp_path):
    path = str(tmp_path / "s.json")
    old = WorkerState(revokes_max=100, revoke_expires=3600)
    old.revoked.add("stale", now=time.time() - 7200)  # already past its expiry
    old.revoked.add("fresh")
    StateDB(path).save(old)
    with open(path) as f:
        assert set(json.load(f)["revoked"]) == {"fresh"}  # purged before saving
    new = WorkerState(revokes_max=100, revoke_expires=3600)
    StateDB(path).load(new)
    assert new.is_revoked("fresh") and not new.is_revoked("stale")


def test_an_unreadable_file_is_set_aside_not_fatal(tmp_path, caplog):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    state = WorkerState()
    assert StateDB(str(path)).load(state) == 0
    assert (tmp_path / "s.json.corrupt").exists() and not path.exists()
    assert "unreadable" in caplog.text


def test_a_missing_file_is_an_empty_start_and_the_directory_is_created(tmp_path):
    path = tmp_path / "new" / "dir" / "s.json"
    state = WorkerState()
    assert StateDB(str(path)).load(state, LamportClock()) == 0
    state.revoked.add("x")
    StateDB(str(path)).save(state)
    assert json.loads(path.read_text())["revoked"].keys() == {"x"}
