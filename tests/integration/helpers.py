"""Helpers for integration tests: raw publishing, queue inspection, cleanup,
and finding a worker's own broker connections (so tests disturb nothing else
on a shared Redis or RabbitMQ)."""
from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any, Callable
from urllib.parse import urlparse

from tests.support import REDIS_URL

BINDING_KEYS = ("_kombu.binding.{q}", "_kombu.binding_permanent.{q}")
# never wait for ever on a broker that has stopped answering
AMQP_OPTIONS = {"connect_timeout": 10, "transport_options": {"read_timeout": 15, "write_timeout": 15}}
PRIORITY_SEP = "\x06\x16"


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def redis_client(url: str = REDIS_URL) -> Any:
    import redis
    return redis.Redis.from_url(url, socket_timeout=15, socket_connect_timeout=10)


def drop_queue(broker_url: str, name: str) -> None:
    """Delete queue ``name`` (and its kombu bindings) from the broker; never anything else."""
    if broker_url.startswith("redis"):
        client = redis_client(broker_url)
        try:
            keys = [name, *(f"{name}{PRIORITY_SEP}{p}" for p in (3, 6, 9)),
                    *(k.format(q=name) for k in BINDING_KEYS),
                    *(f"{k}.{name}" for k in ("unacked", "unacked_index", "unacked_mutex"))]
            client.delete(*keys)
        finally:
            client.close()
    elif broker_url.startswith("amqp"):
        from kombu import Connection
        with Connection(broker_url, **AMQP_OPTIONS) as conn:
            channel = conn.default_channel
            channel.queue_delete(name)
            try:
                channel.exchange_delete(name)
            except Exception:  # the exchange may not exist
                pass


def queue_depth(broker_url: str, name: str) -> int:
    """Messages waiting in queue ``name`` (not counting ones delivered and unacked)."""
    if broker_url.startswith("redis"):
        client = redis_client(broker_url)
        try:
            return sum(client.llen(k) for k in (name, *(f"{name}{PRIORITY_SEP}{p}" for p in (3, 6, 9))))
        finally:
            client.close()
    from kombu import Connection
    with Connection(broker_url, **AMQP_OPTIONS) as conn:
        return conn.default_channel.queue_declare(name, passive=True).message_count


def publish_raw(app: Any, queue: str, body: bytes | str, *, headers: dict | None,
                content_type: str = "application/json", properties: dict | None = None) -> None:
    """Publish bytes exactly as given to ``queue`` (no greenq encoding), as a broken producer would."""
    from kombu import Producer
    declared = app.queues.get_or_create(queue)
    with app.connection() as conn:
        producer = Producer(conn.default_channel)
        producer.publish(body, routing_key=queue, exchange="", content_type=content_type,
                         content_encoding="utf-8", headers=headers, declare=[declared], **(properties or {}))


# ------------------------------------------------------------- a worker's own connections
def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        match = re.match(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    return inodes


def local_ports_to(pid: int, remote_port: int) -> list[int]:
    """Local TCP ports of process ``pid``'s established connections to ``remote_port`` on loopback."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


def kill_redis_connections_of(pid: int, redis_url: str = REDIS_URL) -> int:
    """``CLIENT KILL`` every Redis connection that belongs to process ``pid``; returns how many."""
    port = urlparse(redis_url).port or 6379
    ports = set(local_ports_to(pid, port))
    if not ports:
        return 0
    client = redis_client(redis_url)
    killed = 0
    try:
        for entry in client.client_list():
            host, _, client_port = entry["addr"].rpartition(":")
            if int(client_port) in ports and host in ("127.0.0.1", "::1", "[::1]"):
                killed += client.client_kill_filter(_id=entry["id"])
    finally:
        client.close()
    return killed


def close_rabbitmq_connections_of(pid: int, amqp_port: int = 5672) -> int:
    """``rabbitmqctl close_connection`` on every AMQP connection of process ``pid``; returns how many."""
    ports = set(local_ports_to(pid, amqp_port))
    if not ports:
        return 0
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "peer_port"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    closed = 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) in ports:
            subprocess.run(["rabbitmqctl", "-q", "close_connection", parts[0], "greenq test: dropped on purpose"],
                           capture_output=True, text=True, timeout=60, check=True)
            closed += 1
    return closed
