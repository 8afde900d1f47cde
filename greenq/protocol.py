"""Celery message protocol v2: build task messages and decode received ones.

A task message is headers (the task's metadata), properties (correlation id,
reply-to) and a body ``[args, kwargs, embed]`` serialized with the message's
content type.  See ../shared/reference/celery-protocol.md section 4.1.

:func:`decode` turns a received kombu message into a :class:`Request`, or
raises an error that says exactly what is wrong with the message; the
worker rejects such messages without requeue and carries on.
"""
from __future__ import annotations

import json
import os
import reprlib
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from greenq.exceptions import ContentDisallowed, InvalidMessage, MessageTooLarge

UTC = timezone.utc

_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxstring = 256
_repr.maxother = 256
_repr.maxlong = 256
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 32


def saferepr(obj: Any, maxsize: int = 1024) -> str:
    """A bounded repr for ``argsrepr``/``kwargsrepr`` and events."""
    try:
        text = _repr.repr(obj)
    except Exception as exc:  # a broken __repr__ must not stop a publish
        text = f"<unrepresentable {type(obj).__name__}: {exc!r}>"
    return text if len(text) <= maxsize else text[: maxsize - 3] + "..."


def nodename(name: str = "greenq", host: str | None = None) -> str:
    return f"{name}@{host or socket.gethostname()}"


def anon_nodename() -> str:
    """The ``origin`` of messages sent from a client process."""
    return nodename(f"gen{os.getpid()}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def parse_iso(value: Any, field: str = "date") -> float | None:
    """ISO-8601 (or a number of epoch seconds) to epoch seconds; naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidMessage(f"header {field!r} is not an ISO-8601 date: {value!r}") from None
    else:
        raise InvalidMessage(f"header {field!r} must be an ISO-8601 string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def absolute_time(value: datetime | float | int | str | None, *, field: str, now: datetime) -> datetime | None:
    """Normalise ``eta``/``expires``: a datetime, ISO string or seconds from now."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{field} must be a datetime or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        return now + timedelta(seconds=value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"{field} must be a datetime or a number of seconds, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def task_message(name: str, task_id: str, args: Any = (), kwargs: Any = None, *,
                 eta: datetime | str | None = None, expires: datetime | str | None = None,
                 retries: int = 0, time_limit: float | None = None, soft_time_limit: float | None = None,
                 root_id: str | None = None, parent_id: str | None = None,
                 group_id: str | None = None, group_index: int | None = None,
                 origin: str | None = None, ignore_result: bool = False, shadow: str | None = None,
                 callbacks: list | None = None, errbacks: list | None = None,
                 chain: list | None = None, chord: Any = None, reply_to: str | None = None,
                 argsrepr: str | None = None, kwargsrepr: str | None = None,
                 extra_headers: Mapping[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any], tuple]:
    """Headers, properties and body of a protocol v2 task message."""
    args = args if args is not None else ()
    kwargs = kwargs if kwargs is not None else {}
    if not isinstance(args, (list, tuple)):
        raise TypeError(f"task args must be a list or tuple, got {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"task kwargs must be a mapping, got {type(kwargs).__name__}")
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": to_iso(eta),
        "expires": to_iso(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": saferepr(args) if argsrepr is None else argsrepr,
        "kwargsrepr": saferepr(kwargs) if kwargsrepr is None else kwargsrepr,
        "origin": origin or anon_nodename(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    if extra_headers:
        headers.update(extra_headers)
    properties = {"correlation_id": task_id, "reply_to": reply_to or ""}
    body = (list(args), dict(kwargs),
            {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord})
    return headers, properties, body


class Request:
    """A task invocation: what the worker decoded, and what ``task.request`` shows.

    Times (``eta``, ``expires``) are epoch seconds (floats) or None.  Fields
    not given keep the class defaults below.
    """

    # id and name are None only on the blank request of a task called directly
    id: str = None  # type: ignore[assignment]
    name: str = None  # type: ignore[assignment]
    # set in __init__ (fresh containers per request)
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    delivery_info: dict[str, Any]
    callbacks: list | None = None
    errbacks: list | None = None
    chain: list | None = None
    chord: Any = None
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    origin: str | None = None
    ignore_result: bool = False
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    priority: int | None = None
    message: Any = None
    content_type: str | None = None
    content_encoding: str | None = None
    body: Any = None
    is_eager: bool = False
    called_directly: bool = False
    hostname: str | None = None
    task: Any = None
    acks_late: bool = False
    acknowledged: bool = False
    time_start: float | None = None
    worker_pid: int | None = None
    handle: Any = None
    generation: int = 0
    admitted: bool = False  # took its rate-limit token (greenq.ratelimit): not asked again
    shadow: str | None = None
    stamps: Any = None

    def __init__(self, **fields: Any) -> None:
        unknown = fields.keys() - _REQUEST_FIELDS
        if unknown:
            raise TypeError(f"unknown request fields: {', '.join(sorted(unknown))}")
        self.__dict__.update(fields)
        if "args" not in fields or self.args is None:
            self.args = []
        if "kwargs" not in fields or self.kwargs is None:
            self.kwargs = {}
        if "headers" not in fields or self.headers is None:
            self.headers = {}
        if "delivery_info" not in fields or self.delivery_info is None:
            self.delivery_info = {}

    @classmethod
    def _decoded(cls, **fields: Any) -> "Request":
        """The request :func:`decode` builds: its fields are known, and args,
        kwargs, headers and delivery_info are always given, so the checks of
        ``__init__`` are skipped (they cost more than the rest of the call)."""
        request = cls.__new__(cls)
        request.__dict__.update(fields)
        return request

    @property
    def timelimit(self) -> tuple[float | None, float | None]:
        return self.time_limit, self.soft_time_limit

    def info(self) -> dict[str, Any]:
        """The shape ``inspect active``/``reserved`` and Flower expect."""
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "type": self.name,
            "hostname": self.hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": {
                "exchange": self.delivery_info.get("exchange"),
                "routing_key": self.delivery_info.get("routing_key"),
                "priority": self.delivery_info.get("priority", self.priority),
                "redelivered": self.delivery_info.get("redelivered", False),
            },
            "worker_pid": self.worker_pid,
        }

    def __repr__(self) -> str:
        return f"<Request {self.name}[{self.id}]>"


_REQUEST_FIELDS = frozenset(
    [name for name in vars(Request) if not name.startswith("_") and not callable(getattr(Request, name))
     and not isinstance(getattr(Request, name), property)]
    + ["args", "kwargs", "headers", "delivery_info"])


def _number_or_none(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage(f"header {field!r} must be a number or null, got {value!r}")
    return float(value) if value > 0 else None


JSON = "application/json"
_kombu: tuple[Any, Any, Any] | None = None


def _kombu_serialization() -> tuple[Any, Any, Any]:
    """kombu's ContentDisallowed, DecodeError and loads, imported on first use:
    @app.task imports this module, and a script must be able to declare tasks
    before worker_main patches.  (Cached: three imports per message cost more
    than the rest of decoding a small body.)"""
    global _kombu
    if _kombu is None:
        from kombu.exceptions import ContentDisallowed as KombuContentDisallowed
        from kombu.exceptions import DecodeError
        from kombu.serialization import loads
        _kombu = (KombuContentDisallowed, DecodeError, loads)
    return _kombu


def _may_hold_typed_values(text: bytes | str) -> bool:
    """Whether JSON ``text`` may hold one of kombu's typed values
    (``{"__type__": "datetime", "__value__": ...}``, decoded by kombu's
    ``object_hook``).  Such a key is spelled either literally or with a
    ``\\u`` escape (JSON has no other way to write ``_`` or a letter), so
    text with neither decodes to the same value with or without the hook."""
    if isinstance(text, str):
        return "__type__" in text or "\\u" in text
    return b"__type__" in text or b"\\u" in text


def _plain_json(text: bytes | str) -> Any:
    """``json.loads`` without kombu's hook, for text that cannot need it: the
    stdlib's shared decoder instead of a new decoder and a Python call per
    object.  Bytes are UTF-8, as kombu reads them."""
    return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)


def json_loads(text: bytes | str) -> Any:
    """kombu's JSON ``loads`` (typed values included), by the stdlib alone
    when the text cannot hold a typed value."""
    if isinstance(text, (bytes, str)) and not _may_hold_typed_values(text):
        return _plain_json(text)
    from kombu.utils.json import loads
    return loads(text)


def decode(message: Any, *, accept: set[str] | frozenset[str], max_size: int | None = None) -> Request:
    """Decode a received kombu message into a :class:`Request`.

    Raises:
        InvalidMessage: not a protocol v2 task message, or a malformed field.
        ContentDisallowed: the content type is not in ``accept_content``.
        MessageTooLarge: the body is larger than ``max_size`` bytes.
    """
    kombu_content_disallowed, kombu_decode_error, loads = _kombu_serialization()
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        raise InvalidMessage(
            "not a Celery protocol v2 task message (no 'task' header); "
            "protocol v1 messages are not accepted: upgrade the sender to send protocol 2")
    task_id = headers.get("id")
    name = headers.get("task")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidMessage(f"header 'id' must be a non-empty string, got {task_id!r}")
    if not isinstance(name, str) or not name:
        raise InvalidMessage(f"header 'task' must be a non-empty string, got {name!r}")
    body = message.body
    if max_size is not None and body is not None and len(body) > max_size:
        raise MessageTooLarge(
            f"message body is {len(body)} bytes, over task_message_max_size ({max_size}); "
            "pass large data by reference (a URL or a key) instead")
    content_type = message.content_type
    try:
        if content_type == JSON and JSON in accept and body and isinstance(body, (bytes, str)) \
                and not _may_hold_typed_values(body):
            payload = _plain_json(body)
        else:
            payload = loads(body, content_type, message.content_encoding, accept=accept)
    except kombu_content_disallowed:
        raise ContentDisallowed(
            f"content type {content_type!r} is not accepted (accept_content={sorted(accept)}); "
            "add its serializer to accept_content only if you trust every sender") from None
    except (kombu_decode_error, ValueError, TypeError, RecursionError) as exc:
        raise InvalidMessage(f"body cannot be decoded as {content_type}: {exc}") from None
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        raise InvalidMessage("body must be [args, kwargs, embed] (protocol v2)")
    args, kwargs, embed = payload
    if not isinstance(args, (list, tuple)):
        raise InvalidMessage(f"args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise InvalidMessage(f"kwargs must be a mapping, got {type(kwargs).__name__}")
    if embed is None:
        embed = {}
    elif not isinstance(embed, dict):
        raise InvalidMessage(f"embed must be a mapping, got {type(embed).__name__}")
    retries = headers.get("retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidMessage(f"header 'retries' must be a non-negative integer, got {retries!r}")
    timelimit = headers.get("timelimit") or (None, None)
    if not isinstance(timelimit, (list, tuple)) or len(timelimit) != 2:
        raise InvalidMessage(f"header 'timelimit' must be [hard, soft], got {timelimit!r}")
    properties = message.properties
    delivery_info = message.delivery_info or {}
    return Request._decoded(
        id=task_id,
        name=name,
        args=list(args),
        kwargs=kwargs,
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        eta=parse_iso(headers.get("eta"), "eta"),
        expires=parse_iso(headers.get("expires"), "expires"),
        retries=retries,
        time_limit=_number_or_none(timelimit[0], "timelimit[0]"),
        soft_time_limit=_number_or_none(timelimit[1], "timelimit[1]"),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        origin=headers.get("origin"),
        ignore_result=bool(headers.get("ignore_result", False)),
        argsrepr=headers.get("argsrepr"),
        kwargsrepr=headers.get("kwargsrepr"),
        shadow=headers.get("shadow"),
        stamps=headers.get("stamps"),
        headers=headers,
        reply_to=properties.get("reply_to"),
        correlation_id=properties.get("correlation_id", task_id),
        delivery_info=delivery_info,
        priority=properties.get("priority", delivery_info.get("priority")),
        message=message,
        content_type=content_type,
        content_encoding=message.content_encoding,
        body=body,
    )


def seconds_until(epoch: float | None, now: float | None = None) -> float | None:
    if epoch is None:
        return None
    return epoch - (time.time() if now is None else now)
