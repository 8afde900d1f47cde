"""The child side of :class:`greenq.pools.prefork.ProcessPool`.

A child is a fresh interpreter (spawn or forkserver).  It imports the
worker's app by module, re-applies the settings the parent changed in code,
imports every module that defines a task, sends ``worker_process_init``, and
then runs one request at a time with its own :class:`~greenq.execute.Tracer`:
task signals fire here, results and retries are stored and sent from here.

Messages, over two one-way pipes::

    parent -> child   (job_id, request_fields) | None (exit)
    child -> parent   ("ready", pid) | ("done", job_id, report) | ("boot-error", traceback)

A report holds only builtins (state, action, reprs, traceback, resident
memory), so it always unpickles in the parent whatever the task returned.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any, Iterator

from greenq import signals, states
from greenq.exceptions import ConfigurationError, NotRegistered
from greenq.pools.solo import SoloPool

logger = logging.getLogger("greenq.worker")

#: True in a child process
CHILD = False


# ---------------------------------------------------------------------- in the parent
def app_reference(app: Any) -> tuple[str, str]:
    """``(module, attribute)`` under which a child process finds ``app``.

    Looks first in the modules that define the app's tasks, then in every
    imported module.

    Raises:
        ConfigurationError: the app lives only in ``__main__``.
    """
    preferred = [t.__module__ for t in app.tasks.values()] + list(app.conf.include) + list(app.conf.imports)
    names = list(dict.fromkeys(preferred)) + [n for n in list(sys.modules) if n not in preferred]
    for name in names:
        module = sys.modules.get(name)
        if module is None or name in ("__main__", "__mp_main__"):
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return name, attr
    raise ConfigurationError(
        "child processes cannot import the app: it is defined in __main__. Define it in a module "
        "and start the worker with -A that.module")


def task_modules(app: Any) -> list[str]:
    """Modules a child imports so it knows the same tasks as the parent."""
    modules = sorted({t.__module__ for t in app.tasks.values()}
                     - {"__main__", "__mp_main__"} - {m for m in sys.modules if m.startswith("greenq.")})
    in_main = sorted(n for n, t in app.tasks.items() if t.__module__ in ("__main__", "__mp_main__"))
    if in_main:
        logger.warning("tasks defined in __main__ cannot run in child processes (they fail with "
                       "NotRegistered there): %s; move them into a module", ", ".join(in_main))
    return modules


def boot_info(app: Any, time_limit: float | None, soft_time_limit: float | None, name: str,
              nice: int = 0) -> dict[str, Any]:
    """What a child needs to rebuild the parent's app (picklable)."""
    module, attr = app_reference(app)
    changes = {}
    for key, value in app.conf.changes().items():
        try:
            changes[key] = pickle.dumps(value)
        except Exception:  # a setting holding e.g. a lambda: the app module sets it again anyway
            logger.debug("setting %s cannot be sent to child processes; they use the app module's value", key)
    root = logging.getLogger()
    files = [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]
    return {
        "app": (module, attr),
        "modules": [m for m in task_modules(app) if m != module],
        "conf": changes,
        "time_limit": time_limit,
        "soft_time_limit": soft_time_limit,
        "pool": name,
        "nice": nice,
        "log": {"level": root.level, "file": files[0] if files else None,
                "format": app.conf.worker_log_format, "configure": bool(root.handlers)},
    }


# ---------------------------------------------------------------------- in the child
class ChildSlot(SoloPool):
    """Runs one task at a time in the child's main thread.

    Only the soft limit is enforced here (an alarm raises
    SoftTimeLimitExceeded inside the task); the parent kills the child at
    the hard limit.
    """

    name = "child"

    def time_limits(self, soft: float | None, hard: float | None) -> Any:
        return super().time_limits(soft, None)


def _signal_hygiene() -> None:
    # Ctrl+C reaches the whole process group: the parent decides (warm
    # shutdown), the child finishes its task.  The rest as a new process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)


def _setup_logging(log: dict[str, Any]) -> None:
    if not log.get("configure"):
        return
    handler: logging.Handler = logging.FileHandler(log["file"]) if log.get("file") else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(log["format"]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log["level"])


def _bootstrap(boot: dict[str, Any]) -> Any:
    module_name, attr = boot["app"]
    app = getattr(importlib.import_module(module_name), attr)
    for key, blob in boot["conf"].items():
        try:
            app.conf.update({key: pickle.loads(blob)})
        except Exception as exc:  # keep the app module's value
            logger.warning("setting %s from the worker could not be applied in the child: %r", key, exc)
    for name in boot["modules"]:
        importlib.import_module(name)
    app.import_default_modules()
    return app


def rss_kib() -> int | None:
    """Resident memory of this process in KiB (None if unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        try:
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak // 1024 if sys.platform == "darwin" else peak
        except (ImportError, OSError):
            return None


def run_one(app: Any, tracer: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Run one request in this process and report what happened."""
    from greenq.protocol import Request, saferepr

    request = Request(**fields)
    task = app.tasks.get(request.name)
    if task is None:
        exc = NotRegistered(f"task {request.name!r} is not registered in the child process: it is defined "
                            "in a module the child did not import (or in __main__)")
        app.backend.mark_as_failure(request.id, exc, request=request)
        return {"state": states.FAILURE, "action": "ack", "exc": repr(exc), "exc_type": "NotRegistered"}
    request.task = task
    outcome = tracer.run(request)
    report = {"state": outcome.state, "action": outcome.action, "retval": saferepr(outcome.retval, 256),
              "traceback": outcome.traceback}
    if outcome.exc is not None:
        report["exc"] = saferepr(outcome.exc, 1024)
        report["exc_type"] = type(outcome.exc).__name__
    return report


def main(rx: Any, tx: Any, boot: dict[str, Any]) -> None:
    """Entry point of a child process."""
    global CHILD
    CHILD = True
    _signal_hygiene()
    if boot.get("nice"):
        with contextlib.suppress(OSError):
            os.nice(boot["nice"])
    try:
        _setup_logging(boot["log"])
        app = _bootstrap(boot)
        from greenq.execute import Tracer
        signals.worker_process_init.send(sender=None)
        tracer = Tracer(app, ChildSlot(), None, time_limit=boot["time_limit"],
                        soft_time_limit=boot["soft_time_limit"])
    except BaseException:
        with contextlib.suppress(OSError):
            tx.send(("boot-error", traceback.format_exc()))
        return
    tx.send(("ready", os.getpid()))
    exitcode = 0
    try:
        for job_id, fields in _jobs(rx):
            tracer.hostname = fields.get("hostname")
            started = time.monotonic()
            try:
                report = run_one(app, tracer, fields)
            except BaseException as exc:  # the tracer reports task errors; this is greenq failing
                logger.exception("child %d: running %s failed", os.getpid(), fields.get("name"))
                report = {"state": states.FAILURE, "action": "ack", "exc": repr(exc),
                          "exc_type": type(exc).__name__, "traceback": traceback.format_exc()}
            report["runtime"] = time.monotonic() - started
            report["rss"] = rss_kib()
            try:
                tx.send(("done", job_id, report))
            except (OSError, pickle.PicklingError):
                exitcode = 1
                break
    finally:
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=exitcode)
        with contextlib.suppress(Exception):
            app.close()


def _jobs(rx: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    while True:
        try:
            message = rx.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        yield message
