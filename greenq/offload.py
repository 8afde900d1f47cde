"""CPU offload: which requests leave the worker's own slots for child processes.

A green worker (``greenq worker -P gevent -c 1000 --cpu-pool 2``) runs its
I/O-bound tasks on green threads and sends CPU-bound ones to a
:class:`~greenq.pools.prefork.ProcessPool` of 2 children, so a parse or a
resize never holds the hub: the loop keeps feeding the green threads while
the children compute, and waits for them without blocking.

A request is CPU-bound when its task is declared so::

    @app.task(cpu=True)
    def parse_feed(url, body): ...

or when it arrives through one of the worker's CPU queues
(``--cpu-queues parse`` or the ``worker_cpu_queues`` setting).  Queues are
matched by the message's routing key, so they must be direct queues (the
default kind).

In a ``-P prefork`` worker every request runs in a child; ``cpu=True`` then
changes nothing.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

from greenq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from greenq.app import App
    from greenq.protocol import Request

logger = logging.getLogger("greenq.worker")


class CpuBound:
    """``CpuBound(app, queues)(request)`` is True for requests the CPU pool runs."""

    def __init__(self, app: "App", queues: Iterable[str] = ()) -> None:
        keys = set()
        for name in queues:
            queue = app.queues.get(name)
            if queue is None:
                raise ConfigurationError(f"--cpu-queues names an unknown queue {name!r} "
                                         f"(known: {', '.join(sorted(app.queues))})")
            if queue.exchange is not None and queue.exchange.type not in ("direct", ""):
                raise ConfigurationError(
                    f"CPU queue {name!r} is bound to a {queue.exchange.type} exchange: CPU queues are "
                    "matched by routing key and must be direct; mark the tasks cpu=True instead")
            keys.update({name, queue.routing_key or name})
        self.routing_keys = frozenset(keys)

    def __call__(self, request: "Request") -> bool:
        task = request.task
        if task is not None and task.cpu:
            return True
        return bool(self.routing_keys) and request.delivery_info.get("routing_key") in self.routing_keys

    def __repr__(self) -> str:
        return f"<CpuBound cpu=True tasks, queues {sorted(self.routing_keys)}>"


def cpu_tasks_without_pool(app: "App", consumed: Iterable[str]) -> list[str]:
    """Names of ``cpu=True`` tasks that would run in this worker's own slots.

    Only tasks routed to a queue the worker consumes count: in a mixed
    deployment the green worker does not consume the CPU queue, and that is
    fine.
    """
    consumed = set(consumed)
    found = []
    for name, task in sorted(app.tasks.items()):
        if not getattr(task, "cpu", False):
            continue
        try:
            queue = app.router.route(name, (), {}, {}, task=task)["queue"]
        except Exception:  # a router that needs real arguments: cannot tell, so warn
            queue = None
        if queue is None or queue.name in consumed:
            found.append(name)
    return found


def warn_about_cpu_tasks(app: "App", pool_name: str, consumed: Iterable[str]) -> None:
    """Log once at start when CPU-bound tasks would block a green worker's hub."""
    from greenq.pools import GREEN_POOLS
    if pool_name not in GREEN_POOLS:
        return
    names = cpu_tasks_without_pool(app, consumed)
    if names:
        logger.warning(
            "tasks declared cpu=True run in this worker's green threads and hold every other task while "
            "they compute: %s. Start the worker with --cpu-pool N, or route them to a queue that a "
            "-P prefork worker consumes.", ", ".join(names))


def process_pool_options(options: dict[str, Any]) -> dict[str, Any]:
    """The subset of worker pool options a ProcessPool understands."""
    wanted = ("max_tasks_per_child", "max_memory_per_child", "start_method", "prefetch")
    return {k: v for k, v in options.items() if k in wanted and v is not None}
