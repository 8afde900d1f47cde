"""The io-fanout floor: the same fetches by plain gevent in one process, no queue.

    python -m bench.peers.floor N URL CONCURRENCY

Prints ``{"start", "end", "cpu", "ok"}``: N calls of :func:`common.fetch`
(the same requests session as the workers) on a pool of CONCURRENCY green
threads.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent.pool  # noqa: E402

from bench.peers.common import fetch  # noqa: E402


def main() -> None:
    n, url, concurrency = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    pool = gevent.pool.Pool(concurrency)
    cpu = time.process_time()
    start = time.time()
    statuses = list(pool.imap_unordered(fetch, [f"{url}/{i}" for i in range(n)]))
    end = time.time()
    print(json.dumps({"start": start, "end": end, "cpu": time.process_time() - cpu,
                      "ok": sum(1 for s in statuses if s == 200)}))


if __name__ == "__main__":
    main()
