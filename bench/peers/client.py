"""The sending and checking side of a run, one system per process.

    python -m bench.peers.client send SYSTEM WORKLOAD N URL IDS_FILE
    python -m bench.peers.client verify SYSTEM WORKLOAD IDS_FILE

``send`` publishes N tasks (WORKLOAD ``fetch`` or ``noop``) with the system's
own client API, one call per task as a user would, writes their ids to
IDS_FILE and prints ``{"first_send", "last_send"}`` (epoch seconds).
``verify`` reads every result back through the system's own result API
(outside any timed window) and prints how many are what the task returns.
Unpatched: these are ordinary client processes.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any


def _app(system: str) -> Any:
    if system == "greenq":
        from bench.peers import greenq_app as module
    elif system == "celery":
        from bench.peers import celery_app as module  # type: ignore[no-redef]
    elif system == "dramatiq":
        from bench.peers import dramatiq_app as module  # type: ignore[no-redef]
    elif system == "huey":
        from bench.peers import huey_app as module  # type: ignore[no-redef]
    else:
        raise SystemExit(f"unknown system {system!r}")
    return module


def send(system: str, workload: str, n: int, url: str, ids_file: str) -> dict[str, float]:
    module = _app(system)
    task = getattr(module, workload)
    ids: list[str] = []
    first = time.time()
    if system in ("greenq", "celery"):
        for i in range(n):
            ids.append((task.delay(f"{url}/{i}") if workload == "fetch" else task.delay()).id)
    elif system == "dramatiq":
        for i in range(n):
            ids.append((task.send(f"{url}/{i}") if workload == "fetch" else task.send()).message_id)
    else:  # what calling a Huey task does, keeping the id (the call returns None without results)
        for i in range(n):
            signature = task.s(f"{url}/{i}") if workload == "fetch" else task.s()
            module.huey.enqueue(signature)
            ids.append(signature.id)
    last = time.time()
    with open(ids_file, "w") as f:
        json.dump(ids, f)
    return {"first_send": first, "last_send": last}


def verify(system: str, workload: str, ids_file: str) -> dict[str, Any]:
    module = _app(system)
    with open(ids_file) as f:
        ids = json.load(f)
    expected = 200 if workload == "fetch" else None
    values: list[Any] = []
    if system == "greenq":
        for start in range(0, len(ids), 1000):
            metas = module.app.backend.get_many_meta(ids[start:start + 1000])
            values += [m["result"] if m["status"] == "SUCCESS" else ("missing", m["status"]) for m in metas]
    elif system == "celery":
        found = dict(module.app.backend.get_many(ids, timeout=60, interval=0.05))
        values = [found[i]["result"] if i in found and found[i]["status"] == "SUCCESS" else ("missing",)
                  for i in ids]
    elif system == "dramatiq":
        import dramatiq
        from dramatiq.results import ResultMissing
        for task_id in ids:
            message = dramatiq.Message(queue_name=module.QUEUE, actor_name=workload, args=(), kwargs={},
                                       options={}, message_id=task_id, message_timestamp=0)
            try:
                values.append(module.result_backend.get_result(message))
            except ResultMissing:
                values.append(("missing",))
    else:
        huey = module.huey
        if workload == "noop":  # a stored None and a missing result read the same: count the store
            stored = huey.storage.result_store_size()
            values = [None] * stored + [("missing",)] * (len(ids) - stored)
        else:
            values = [huey.result(task_id) for task_id in ids]
    good = sum(1 for v in values if v == expected)
    return {"checked": len(ids), "ok": good, "bad_sample": [v for v in values if v != expected][:3]}


def main() -> None:
    command, system, workload = sys.argv[1:4]
    if command == "send":
        n, url, ids_file = int(sys.argv[4]), sys.argv[5], sys.argv[6]
        print(json.dumps(send(system, workload, n, url, ids_file)))
    elif command == "verify":
        print(json.dumps(verify(system, workload, sys.argv[4]), default=repr))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
