"""Dramatiq's side of the hot-path bench: the one no-op actor, with Redis as the broker.

Worker: ``dramatiq bench.peer_dramatiq --processes 2 --threads 8`` with ``BENCH_REDIS_URL``
and ``BENCH_RECORD_DIR`` set. Default middleware; no results backend.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.hot_record import record

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(t: float, k: str, s: str) -> None:
    record(s, k, t)
