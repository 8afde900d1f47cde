"""The same two workloads as a task app for each system measured.

``greenq_app``, ``celery_app``, ``dramatiq_app`` and ``huey_app`` each define
``fetch(url)`` (one HTTP GET through :func:`common.fetch`) and ``noop()``, and
report progress through :class:`common.Progress` from the hook each system
runs after a task's result is stored.  Everything they create in Redis has
the run's prefix (``BENCH_RUN``) in its name, so the driver
(``bench/foundation.py``) deletes exactly what one run made.
"""
