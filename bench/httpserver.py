"""The local HTTP server of io-fanout: answers every GET after ``--delay`` seconds.

A gevent ``StreamServer`` speaking just enough HTTP/1.1 (keep-alive, no
bodies) that its own cost per request is a few tens of microseconds, so the
clients under test, not the server, are what is measured.  Paths:

    /...        answer "ok" after the delay
    /fast/...   answer at once (the capacity check)
    /__stats    {"served": n, "cpu": CPU seconds this process has used}

Run by ``bench/foundation.py``; by hand: ``python bench/httpserver.py --port 8099``.
It listens on 127.0.0.1 only and prints ``listening <port>`` when ready.

``--load PORT`` is the other side of the capacity check: raw keep-alive
sockets (much cheaper than any HTTP client) asking ``/fast`` for
``--seconds``; prints the number of answers.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
served = 0


def stats_response() -> bytes:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    body = json.dumps({"served": served, "cpu": usage.ru_utime + usage.ru_stime}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def make_handler(delay: float):
    def handle(sock, address):
        global served
        buffer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    parts = head.split(b" ", 2)
                    path = parts[1] if len(parts) > 1 else b"/"
                    if path.startswith(b"/__stats"):
                        sock.sendall(stats_response())
                        continue
                    if not path.startswith(b"/fast"):
                        gevent.sleep(delay)
                    served += 1
                    sock.sendall(OK)
        except OSError:
            return
        finally:
            sock.close()
    return handle


def load(port: int, connections: int, seconds: float) -> int:
    import socket
    import time
    request = b"GET /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    deadline = time.monotonic() + seconds
    counts = [0] * connections

    def client(i: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while time.monotonic() < deadline:
                sock.sendall(request)
                got = b""
                while not got.endswith(b"ok"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    got += chunk
                counts[i] += 1

    gevent.joinall([gevent.spawn(client, i) for i in range(connections)])
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds before each answer")
    parser.add_argument("--load", type=int, metavar="PORT", help="run the capacity-check client instead")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.load:
        print(load(args.load, args.connections, args.seconds), flush=True)
        return
    server = StreamServer(("127.0.0.1", args.port), make_handler(args.delay), backlog=4096)
    server.init_socket()
    print(f"listening {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
