"""Settings: unknown names are errors with a suggestion; types are checked."""
from __future__ import annotations

import types

import pytest

from greenq import App
from greenq.config import Settings, mask_url, settings_from_object
from greenq.exceptions import ConfigurationError

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("GREENQ_BROKER_URL", "GREENQ_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name, suggestion", [
    ("broker_ur", "broker_url"),
    ("result_expire", "result_expires"),
    ("task_acks_lat", "task_acks_late"),
    ("worker_prefetch_multiplyer", "worker_prefetch_multiplier"),
])
def test_unknown_setting_is_rejected_with_a_suggestion(name, suggestion):
    with pytest.raises(ConfigurationError, match=f"unknown setting '{name}'.*did you mean '{suggestion}'"):
        App("t", **{name: 1})


def test_unknown_setting_without_a_close_match_names_where_to_look():
    with pytest.raises(ConfigurationError, match="unknown setting 'zzz'; see greenq/config.py"):
        Settings().update(zzz=1)


def test_attribute_assignment_is_validated_too():
    conf = Settings()
    with pytest.raises(ConfigurationError, match="unknown setting"):
        conf.resutl_backend = "redis://"
    with pytest.raises(AttributeError, match="did you mean 'result_backend'"):
        _ = conf.resutl_backend


@pytest.mark.parametrize("name, value, words", [
    ("result_expires", "1 day", "must be None or float or int"),
    ("task_acks_late", "yes", "must be bool"),
    ("worker_prefetch_multiplier", 0, "must be greater than 0"),
    ("worker_prefetch_multiplier", True, "must be int"),  # a bool is not a number here
    ("broker_connection_timeout", -1, "must be greater than 0"),
    ("accept_content", "json", "must be list or tuple"),
    ("accept_content", ["json", 3], "list of serializer"),
    ("task_protocol", 1, "only protocol 2"),
    ("task_default_retry_delay", -5, "must be 0 or more"),
])
def test_wrong_types_and_values_are_rejected(name, value, words):
    with pytest.raises(ConfigurationError) as info:
        App("t", **{name: value})
    assert name in str(info.value) and words in str(info.value)


def test_defaults_and_set_values():
    app = App("t", result_expires=60, task_acks_late=True)
    assert app.conf.result_expires == 60
    assert app.conf.task_acks_late is True
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.is_set("result_expires") and not app.conf.is_set("task_serializer")
    app.conf.accept_content.append("pickle")  # a copy: the default is not mutated
    assert Settings().accept_content == ["json"]


def test_config_from_a_module_object():
    module = types.ModuleType("celeryconfig")
    module.broker_url = "redis://127.0.0.1:6379/1"
    module.result_expires = 30
    module.SOMETHING_ELSE = "ignored: not lowercase"
    app = App("t")
    app.config_from_object(module)
    assert app.conf.broker_url == "redis://127.0.0.1:6379/1"
    assert app.conf.result_expires == 30


def test_config_from_object_reports_a_typo_naming_the_source():
    module = types.ModuleType("celeryconfig")
    module.task_always_eagr = True
    with pytest.raises(ConfigurationError, match="unknown setting 'task_always_eagr'.*task_always_eager"):
        App("t").config_from_object(module)


def test_config_from_object_with_a_namespace():
    class Conf:
        GREENQ_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
        GREENQ_TASK_ACKS_LATE = True
        OTHER_SETTING = "not ours"
        lowercase = "not read with a namespace"

    app = App("t")
    app.config_from_object(Conf, namespace="GREENQ")
    assert app.conf.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert app.conf.task_acks_late is True


def test_namespaced_typo_is_reported_with_its_full_name():
    with pytest.raises(ConfigurationError, match="'GREENQ_RESULT_EXPIRE'.*result_expires"):
        settings_from_object({"GREENQ_RESULT_EXPIRE": 5}, namespace="GREENQ")


def test_config_from_a_dotted_path():
    app = App("t", config_source="tests.unit.settings_module:SETTINGS")
    assert app.conf.result_expires == 42
    assert app.conf.task_default_queue == "from-path"


def test_environment_gives_broker_and_backend(monkeypatch):
    monkeypatch.setenv("GREENQ_BROKER_URL", "redis://127.0.0.1:6379/1")
    monkeypatch.setenv("GREENQ_RESULT_BACKEND", "redis://127.0.0.1:6379/2")
    app = App("t")
    assert app.broker_url() == "redis://127.0.0.1:6379/1"
    assert app.conf.result_backend == "redis://127.0.0.1:6379/2"
    assert not app.uses_embedded_broker


def test_explicit_argument_beats_the_environment(monkeypatch):
    monkeypatch.setenv("GREENQ_BROKER_URL", "redis://127.0.0.1:6379/1")
    assert App("t", broker="amqp://127.0.0.1//").broker_url() == "amqp://127.0.0.1//"


def test_no_broker_means_the_embedded_default():
    app = App("t")
    assert app.broker_url() == "embedded://"
    assert app.uses_embedded_broker
    assert type(app.backend).__name__ == "EmbeddedBackend"


def test_a_server_broker_without_backend_has_results_disabled():
    app = App("t", broker="amqp://127.0.0.1//")
    assert type(app.backend).__name__ == "DisabledBackend"


def test_unknown_backend_scheme_lists_the_known_ones():
    app = App("t", backend="cassandra://x")
    with pytest.raises(ConfigurationError, match="unknown result backend 'cassandra'.*redis://"):
        _ = app.backend


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@host:6379/1", "redis://:**@host:6379/1"),
    ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:**@127.0.0.1:5672//"),
    ("redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/1"),
    (None, None),
])
def test_passwords_are_masked(url, shown):
    assert mask_url(url) == shown


def test_humanize_masks_urls():
    app = App("t", broker="redis://:secret@127.0.0.1:6379/1")
    assert "secret" not in repr(app.conf.humanize()) and "secret" not in repr(app)
