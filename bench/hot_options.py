"""The hot-path bench's knobs, one frozen value shared by every side."""

from __future__ import annotations

import attrs


@attrs.frozen
class Options:
    runs: int = 1200  # one-step runs per natchet throughput scenario
    peer_runs: int = 5000  # tasks per peer drain (they go ~15x faster: a longer steady state)
    diamond_runs: int = 400  # 4-step diamond runs (natchet only)
    cap_s: float = 20.0  # a throughput scenario stops waiting after this, and says so
    rates: tuple[float, ...] = (100.0, 1000.0)  # latency scenarios, messages/s
    duration_s: float = 10.0  # how long a latency scenario publishes
    drain_s: float = 5.0  # how long it then waits for the backlog to be started
    workers: tuple[int, ...] = (1, 2, 4)  # natchet worker processes, one-step throughput
    compare_workers: int = 2  # worker processes where natchet and the peers meet
    max_runs: int = 8  # a natchet worker's slots
    peer_threads: int = 8  # Dramatiq threads per process (Celery: prefork, one per process)
    poll_s: float = 0.05  # how often Postgres is polled for SUCCEEDED runs
    engines: int = 1  # natchet engine processes on the one tenant (issue 16)
    partitions: int = 1  # the tenant's dispatch partitions (NATCHET_DISPATCH_PARTITIONS)
