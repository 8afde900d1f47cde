"""Routing precedence: explicit > task_routes > task attribute > default."""
from __future__ import annotations

import pytest

from greenq import App
from greenq.exceptions import ConfigurationError

pytestmark = pytest.mark.timeout(10)


def make_app(**settings):
    app = App("proj", broker="memory://", backend="disabled://", **settings)

    @app.task(name="feeds.fetch", queue="from-task")
    def fetch(url):
        return url

    @app.task(name="feeds.parse")
    def parse(doc):
        return doc

    return app


def queue_of(app, name, **options):
    task = app.tasks.get(name)
    return app.router.route(name, (), {}, options, task=task)["queue"].name


def test_default_queue_for_a_plain_task():
    assert queue_of(make_app(), "feeds.parse") == "celery"
    assert queue_of(make_app(task_default_queue="work"), "feeds.parse") == "work"


def test_task_attribute_beats_the_default():
    assert queue_of(make_app(), "feeds.fetch") == "from-task"


def test_task_routes_beat_the_task_attribute():
    app = make_app(task_routes={"feeds.fetch": {"queue": "from-routes"}})
    assert queue_of(app, "feeds.fetch") == "from-routes"


def test_explicit_option_beats_everything():
    app = make_app(task_routes={"feeds.fetch": {"queue": "from-routes"}})
    assert queue_of(app, "feeds.fetch", queue="explicit") == "explicit"


@pytest.mark.parametrize("routes, name, expected", [
    ({"feeds.*": {"queue": "feeds"}}, "feeds.parse", "feeds"),
    ({"feeds.*": {"queue": "feeds"}}, "mail.send", "celery"),
    ({"feeds.pars?": "q-one-char"}, "feeds.parse", "q-one-char"),      # a string answer is a queue name
    ({"feeds.*": "glob", "feeds.parse": "exact"}, "feeds.parse", "exact"),  # an exact name beats a glob
    ([{"mail.*": "mail"}, {"feeds.*": "feeds"}], "feeds.parse", "feeds"),  # a list is tried in order
    ([{"feeds.*": "first"}, {"feeds.*": "second"}], "feeds.parse", "first"),
])
def test_task_routes_globs_and_lists(routes, name, expected):
    assert queue_of(make_app(task_routes=routes), name) == expected


def test_router_functions_get_the_call_and_may_pass():
    calls = []

    def by_argument(name, args, kwargs, options, task=None):
        calls.append((name, args, task.name if task else None))
        return {"queue": "big"} if args and args[0] == "big" else None

    app = make_app(task_routes=[by_argument, {"feeds.*": "feeds"}])
    assert app.router.route("feeds.parse", ("big",), {}, {}, task=app.tasks["feeds.parse"])["queue"].name == "big"
    assert app.router.route("feeds.parse", ("small",), {}, {}, task=app.tasks["feeds.parse"])["queue"].name == "feeds"
    assert calls[0] == ("feeds.parse", ("big",), "feeds.parse")


def test_router_function_with_the_old_four_argument_signature():
    app = make_app(task_routes=lambda name, args, kwargs, options: "legacy")
    assert queue_of(app, "feeds.parse") == "legacy"


def test_router_by_dotted_path():
    app = make_app(task_routes="tests.unit.test_routing:route_everything_to_dotted")
    assert queue_of(app, "feeds.parse") == "dotted"


def route_everything_to_dotted(name, args, kwargs, options, task=None):
    return "dotted"


def test_task_routes_of_the_wrong_type_fail_at_configuration():
    with pytest.raises(ConfigurationError, match="task_routes.*must be a dict, a router function"):
        make_app(task_routes=5)


def test_a_router_answer_of_the_wrong_type_is_an_error():
    app = make_app(task_routes=lambda *a, **k: 42)
    with pytest.raises(ConfigurationError, match="expected a dict, a queue name or None"):
        queue_of(app, "feeds.parse")


def test_direct_queues_are_published_through_the_default_exchange():
    route = make_app().router.route("feeds.parse", (), {}, {"queue": "work"})
    assert (route["exchange"], route["routing_key"]) == ("", "work")


def test_priority_precedence():
    app = make_app(task_default_priority=1, task_routes={"feeds.*": {"priority": 5}})
    assert app.router.route("feeds.parse", (), {}, {})["priority"] == 5
    assert app.router.route("feeds.parse", (), {}, {"priority": 9})["priority"] == 9
    assert make_app(task_default_priority=1).router.route("feeds.parse", (), {}, {})["priority"] == 1


def test_missing_queues_can_be_forbidden():
    app = make_app(task_create_missing_queues=False, task_queues=["known"])
    assert queue_of(app, "feeds.parse", queue="known") == "known"
    with pytest.raises(ConfigurationError, match="'typo' is not in task_queues"):
        queue_of(app, "feeds.parse", queue="typo")


def test_worker_queue_selection():
    app = make_app(task_queues=["a", "b", "c"])
    assert [q.name for q in app.queues.select(None, ["b"])] == ["a", "c", "celery"]
    assert [q.name for q in app.queues.select(["b"])] == ["b"]
    with pytest.raises(ConfigurationError, match="-X names queues that are not consumed: zz"):
        app.queues.select(["a"], ["zz"])
    with pytest.raises(ConfigurationError, match="no queues left"):
        app.queues.select(["a"], ["a"])
