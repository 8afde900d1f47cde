"""Count the Redis commands a worker sends, with MONITOR, for "commands per task".

MONITOR sees every command the server runs, from every client and database,
so :class:`CommandCounter` keeps only database 5 and drops the benchmark's own
marker reads.  Commands that Lua scripts run inside the server (kombu's and
greenq's fetch scripts, greenq's store script) are reported apart from the
commands clients send, because those cost no round trip.  Commands sent in
one pipeline appear one by one: these are commands, not round trips.

MONITOR slows Redis down, so it is only ever used in an untimed pass.
"""
from __future__ import annotations

import collections
import threading
from typing import Any


class CommandCounter:
    """``with CommandCounter(url, db=5, ignore=("GET bench-1:done",)) as counter: ...``"""

    def __init__(self, url: str, db: int = 5, ignore_keys: tuple[str, ...] = ()) -> None:
        import redis
        self.client = redis.Redis.from_url(url)
        self.db = db
        self.ignore_keys = ignore_keys
        self.client_commands: collections.Counter[str] = collections.Counter()
        self.script_commands: collections.Counter[str] = collections.Counter()
        self._monitor: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = threading.Event()

    def __enter__(self) -> "CommandCounter":
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self._monitor = monitor
            self._started.set()
            while not self._stop.is_set():
                try:
                    entry = monitor.next_command()
                except Exception:  # the connection is closed at stop
                    return
                if int(entry.get("db", -1)) != self.db:
                    continue
                command = entry.get("command", "")
                if any(key in command for key in self.ignore_keys):
                    continue
                name = command.split(" ", 1)[0].upper()
                if entry.get("client_type") == "lua":
                    self.script_commands[name] += 1
                else:
                    self.client_commands[name] += 1

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        # A last command wakes the listener if the server is quiet.
        self.client.ping()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self._monitor.connection.disconnect()
        except Exception:
            pass

    def per_task(self, tasks: int) -> dict[str, Any]:
        return {
            "client_commands_per_task": round(sum(self.client_commands.values()) / tasks, 2),
            "script_commands_per_task": round(sum(self.script_commands.values()) / tasks, 2),
            "client": {k: round(v / tasks, 3) for k, v in self.client_commands.most_common()},
            "inside_scripts": {k: round(v / tasks, 3) for k, v in self.script_commands.most_common()},
        }
