"""Celery's side of the hot-path bench: the one no-op task, with Redis as the broker.

Worker: ``celery -A bench.peer_celery worker --pool prefork --concurrency 2`` with
``BENCH_REDIS_URL`` and ``BENCH_RECORD_DIR`` set. No result backend (a natchet run's
state is kept; Celery's is not, as it is usually run).
"""

from __future__ import annotations

import os

from celery import Celery

from bench.hot_record import record

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(t: float, k: str, s: str) -> None:
    record(s, k, t)
