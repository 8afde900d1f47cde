"""The embedded default: a broker and a result store that need no server.

With no ``broker_url`` configured, greenq uses ``embedded://``: kombu's
filesystem transport in the greenq data directory (``$GREENQ_HOME``, or
``./.greenq`` under the current directory), and the SQLite result store in
the same directory.  Every process on the machine that uses the same
directory shares the queues and results.

The transport here is kombu's filesystem transport with three changes that
matter once there are thousands of messages or several consumers:

* each queue has its own directory, and a consumer keeps a sorted listing
  and refreshes it only when it runs out, so taking a message costs O(1)
  instead of listing every message of every queue;
* a message is written to a temporary file and renamed into place, so a
  consumer never reads a half-written message;
* a consumer claims a message by renaming it (atomic), so two consumers can
  never both take it.  Messages claimed by a process that died are put back
  when the next consumer starts.

What it does not do: survive a crash between claiming a message and
finishing it (a claimed message of a live process is its own), or serve
consumers on other machines.  Use Redis or RabbitMQ for that.
"""
from __future__ import annotations

import os
import time
import uuid
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.utils.json import dumps, loads

CLAIMED = ".claimed-"


def data_dir(app: Any = None) -> str:
    """The embedded data directory (created if missing)."""
    home = None
    if app is not None:
        home = app.conf.embedded_home
    home = home or os.environ.get("GREENQ_HOME") or os.path.join(os.getcwd(), ".greenq")
    home = os.path.abspath(os.path.expanduser(home))
    os.makedirs(home, exist_ok=True)
    return home


def transport_options(home: str, polling_interval: float) -> dict[str, Any]:
    return {
        "data_folder_in": os.path.join(home, "queues"),
        "data_folder_out": os.path.join(home, "queues"),
        "control_folder": os.path.join(home, "exchanges"),
        "polling_interval": polling_interval,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Channel(filesystem.Channel):
    """Filesystem channel with a directory per queue and rename-to-claim."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listings: dict[str, list[str]] = {}
        self._recovered: set[str] = set()

    def _queue_dir(self, queue: str) -> str:
        if not queue or "/" in queue or queue in (".", ".."):
            raise filesystem.ChannelError(f"invalid queue name for the embedded broker: {queue!r}")
        path = os.path.join(self.data_folder_in, queue)
        os.makedirs(path, exist_ok=True)
        return path

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu's two bases name it differently
        folder = self._queue_dir(queue)
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.msg"
        temporary = os.path.join(folder, f".{name}.tmp")
        with open(temporary, "wb") as f:
            f.write(dumps(payload).encode("utf-8"))
        os.rename(temporary, os.path.join(folder, name))

    def _recover(self, folder: str) -> None:
        """Put back messages claimed by processes that no longer run."""
        for name in os.listdir(folder):
            head, sep, pid = name.rpartition(CLAIMED)
            if sep and pid.isdigit() and not _pid_alive(int(pid)):
                try:
                    os.rename(os.path.join(folder, name), os.path.join(folder, head))
                except OSError:
                    pass

    def _get(self, queue: str, timeout: Any = None) -> Any:
        folder = self._queue_dir(queue)
        if queue not in self._recovered:
            self._recover(folder)
            self._recovered.add(queue)
        listing = self._listings.get(queue)
        if not listing:
            listing = sorted((n for n in os.listdir(folder) if n.endswith(".msg")), reverse=True)
            self._listings[queue] = listing
        claim_suffix = f"{CLAIMED}{os.getpid()}"
        while listing:
            name = listing.pop()
            source = os.path.join(folder, name)
            claimed = source + claim_suffix
            try:
                os.rename(source, claimed)
            except OSError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
            finally:
                os.unlink(claimed)
            return loads(payload)
        raise Empty()

    def _size(self, queue: str) -> int:
        return sum(1 for n in os.listdir(self._queue_dir(queue)) if n.endswith(".msg"))

    def _purge(self, queue: str) -> int:
        folder = self._queue_dir(queue)
        count = 0
        for name in os.listdir(folder):
            if name.endswith(".msg"):
                try:
                    os.unlink(os.path.join(folder, name))
                    count += 1
                except OSError:
                    pass
        self._listings.pop(queue, None)
        return count


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = virtual.BrokerState()
    driver_type = "embedded"
    driver_name = "embedded"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.polling_interval = client.transport_options.get("polling_interval", self.polling_interval)


TRANSPORT_ALIASES.setdefault("embedded", "greenq.embedded:Transport")
