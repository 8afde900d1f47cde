"""Tasks: options checked at declaration, eager calls, retries."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from greenq import App, signals, states
from greenq.exceptions import ConfigurationError, MaxRetriesExceededError
from greenq.execute import Tracer
from greenq.protocol import Request

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def app():
    app = App("proj", broker="memory://", backend="disabled://")
    yield app
    app.close()


# ------------------------------------------------------------------ declaration
@pytest.mark.parametrize("options, words", [
    ({"max_retrys": 3}, "unknown option 'max_retrys' (did you mean 'max_retries'?)"),
    ({"acks_lates": True}, "unknown option 'acks_lates' (did you mean 'acks_late'?)"),
    ({"timelimit": 5}, "did you mean 'time_limit'?"),
    ({"max_retries": "3"}, "max_retries must be an integer >= 0 or None"),
    ({"max_retries": -1}, "max_retries must be an integer >= 0 or None"),
    ({"max_retries": True}, "max_retries must be an integer >= 0 or None"),
    ({"time_limit": "10"}, "time_limit must be a number of seconds greater than 0"),
    ({"time_limit": 0}, "time_limit must be a number of seconds greater than 0"),
    ({"soft_time_limit": -1}, "soft_time_limit must be a number of seconds"),
    ({"time_limit": 10, "soft_time_limit": 10}, "soft_time_limit (10) must be less than time_limit (10)"),
    ({"time_limit": 5, "soft_time_limit": 9}, "soft_time_limit (9) must be less than time_limit (5)"),
    ({"rate_limit": "10/minute"}, "rate limit must be like '10/s'"),
    ({"rate_limit": -1}, "rate limit cannot be negative"),
    ({"autoretry_for": ValueError("x")}, "autoretry_for must be exception classes"),
    ({"autoretry_for": (ValueError, "KeyError")}, "autoretry_for must be exception classes"),
    ({"retry_backoff": "yes"}, "retry_backoff must be True/False or a number"),
    ({"queue": 5}, "queue must be a string"),
    ({"priority": 300}, "priority must be an integer 0-255"),
    ({"expires": "soon"}, "expires must be seconds or a datetime"),
    ({"bind": "yes"}, "bind must be True or False"),
    ({"ignore_result": 1}, "ignore_result must be True or False"),
    ({"retry_kwargs": [("countdown", 1)]}, "retry_kwargs must be a dict"),
    ({"base": object}, "base must be a subclass of greenq.Task"),
])
def test_bad_task_options_fail_at_declaration(app, options, words):
    with pytest.raises(ConfigurationError) as info:
        @app.task(**options)
        def work():
            pass
    assert words in str(info.value)


def test_positional_arguments_to_the_decorator_are_refused(app):
    with pytest.raises(TypeError, match="positional arguments are not options"):
        app.task("name")


def test_good_options_are_kept_and_settings_are_the_fallback(app):
    app.conf.task_time_limit = 60

    @app.task(max_retries=5, soft_time_limit=10, rate_limit="10/s", autoretry_for=[KeyError], queue="feeds")
    def fetch(url):
        return url

    assert fetch.name.startswith("tests.unit.test_tasks.") and fetch.name.endswith(".fetch")
    assert fetch.max_retries == 5
    assert fetch.time_limit == 60  # from the setting
    assert fetch.soft_time_limit == 10
    assert fetch.autoretry_for == (KeyError,)
    assert fetch.queue == "feeds"
    assert app.tasks[fetch.name] is fetch
    assert fetch("x") == "x"  # calling the task calls the function


def test_setting_a_bad_option_on_a_task_later_is_checked(app):
    @app.task
    def work():
        pass

    with pytest.raises(ConfigurationError, match="time_limit"):
        work.time_limit = "soon"


def test_calling_with_wrong_arguments_fails_when_sending(app):
    @app.task(name="proj.add")
    def add(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"proj.add\(\): missing a required argument: 'y'"):
        add.delay(1)


def test_unregistered_task_name_says_so(app):
    from greenq.exceptions import NotRegistered
    with pytest.raises(NotRegistered, match="'nope' is not registered"):
        app.tasks["nope"]


# ------------------------------------------------------------------ eager
def test_apply_runs_here_and_returns_the_value(app):
    @app.task(bind=True)
    def whoami(self, x):
        return {"x": x, "eager": self.request.is_eager, "id": self.request.id}

    result = whoami.apply((1,), task_id="fixed-id")
    assert result.get() == {"x": 1, "eager": True, "id": "fixed-id"}
    assert result.state == states.SUCCESS and result.successful()


def test_always_eager_setting_makes_delay_run_inline(app):
    app.conf.task_always_eager = True

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 3).get() == 5


def test_eager_failure_is_returned_or_raised(app):
    @app.task
    def boom():
        raise KeyError("missing")

    result = boom.apply()
    assert result.state == states.FAILURE and result.failed()
    with pytest.raises(KeyError, match="missing"):
        result.get()
    assert isinstance(result.get(propagate=False), KeyError)
    with pytest.raises(KeyError):
        boom.apply(throw=True)


def test_eager_retry_runs_again_until_it_succeeds(app):
    @app.task(bind=True, max_retries=3, default_retry_delay=0)
    def flaky(self):
        if self.request.retries < 2:
            raise self.retry(exc=OSError("try again"))
        return self.request.retries

    assert flaky.apply().get() == 2


def test_eager_retry_gives_up_with_the_original_exception(app):
    @app.task(bind=True, max_retries=2, default_retry_delay=0)
    def always(self):
        raise self.retry(exc=OSError("still down"))

    result = always.apply()
    assert result.state == states.FAILURE
    assert isinstance(result.result, OSError) and str(result.result) == "still down"


def test_retry_without_exc_raises_max_retries_exceeded(app):
    @app.task(bind=True, max_retries=1, default_retry_delay=0)
    def always(self):
        raise self.retry()

    result = always.apply()
    assert isinstance(result.result, MaxRetriesExceededError)
    assert "max_retries (1) exceeded" in str(result.result)


def test_autoretry_for_retries_only_the_listed_exceptions(app):
    calls = []

    @app.task(autoretry_for=(ConnectionError,), max_retries=3, retry_backoff=True, retry_jitter=False,
              retry_backoff_max=0.001)
    def fetch(kind):
        calls.append(kind)
        raise ConnectionError("down") if kind == "net" else ValueError("bad")

    result = fetch.apply(("net",))
    assert result.state == states.FAILURE and isinstance(result.result, ConnectionError)
    assert calls == ["net"] * 4  # the first call and three retries
    calls.clear()
    result = fetch.apply(("value",))
    assert isinstance(result.result, ValueError) and calls == ["value"]


@pytest.mark.parametrize("backoff, retries, cap, expected", [
    (True, 0, 600, 1.0),
    (True, 3, 600, 8.0),
    (2, 3, 600, 16.0),
    (True, 20, 600, 600.0),
    (0.5, 1, 600, 1.0),
    (True, 10, 5, 5.0),
])
def test_backoff_countdown_is_exponential_and_capped(app, backoff, retries, cap, expected):
    @app.task(retry_backoff=backoff, retry_backoff_max=cap, retry_jitter=False)
    def work():
        pass

    assert work.backoff_countdown(retries) == expected


def test_backoff_jitter_stays_within_the_exponential_bound(app):
    @app.task(retry_backoff=True, retry_jitter=True)
    def work():
        pass

    assert all(0 <= work.backoff_countdown(4) <= 16 for _ in range(200))


# ------------------------------------------------------------------ retry on the wire
def _run_as_worker(app, task, args, task_id="task-1", retries=0, queue="work"):
    request = Request(id=task_id, name=task.name, args=list(args), kwargs={}, retries=retries, task=task,
                      root_id=task_id, delivery_info={"exchange": "", "routing_key": queue}, hostname="w@test")
    return Tracer(app).run(request)


def test_worker_retry_republishes_with_the_same_id_and_retries_plus_one(app):
    @app.task(bind=True, max_retries=5, autoretry_for=(ConnectionError,), retry_backoff=4, retry_jitter=False)
    def fetch(self, url):
        raise ConnectionError(f"cannot reach {url}")

    before = datetime.now(timezone.utc)
    outcome = _run_as_worker(app, fetch, ("http://example.invalid/",), retries=1)
    assert outcome.state == states.RETRY
    with app.connection() as conn:
        message = conn.SimpleQueue("work", no_ack=True).get(timeout=5)
    headers = message.headers
    assert headers["id"] == "task-1" and headers["root_id"] == "task-1"
    assert headers["retries"] == 2
    assert json.loads(message.body)[0] == ["http://example.invalid/"]
    delay = (datetime.fromisoformat(headers["eta"]) - before).total_seconds()
    assert 7.5 < delay < 9.0  # backoff 4 * 2**1 seconds


def test_retry_signal_and_hook_fire_and_a_failing_receiver_is_harmless(app, caplog):
    seen = []

    def receiver(sender=None, request=None, reason=None, **kwargs):
        seen.append((request.id, str(reason)))
        raise RuntimeError("receiver bug")

    @app.task(bind=True, max_retries=1, default_retry_delay=30)
    def work(self):
        raise self.retry(exc=OSError("later"))

    signals.task_retry.connect(receiver)
    try:
        outcome = _run_as_worker(app, work, ())
    finally:
        signals.task_retry.disconnect(receiver)
    assert outcome.state == states.RETRY
    assert seen == [("task-1", "later")]
    assert "receiver bug" in caplog.text
