"""End to end on every broker: a task sent by a client runs on a worker."""
from __future__ import annotations

import pytest

from tests.support import client_app, worker

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("pool", ["threads", "solo", "gevent"])
def test_add_round_trip(broker, pool, queue, home):
    kind, broker_url, backend_url = broker
    with worker(broker=broker_url, backend=backend_url, pool=pool, queue=queue, home=home):
        app = client_app(broker_url, backend_url, queue=queue, home=home)
        try:
            results = [app.send_task("tests.apps.basic.add", (i, i)) for i in range(20)]
            assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
        finally:
            app.close()
