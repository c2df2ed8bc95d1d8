"""When a worker counts as alive, from its heartbeats (``natchet workers list``, the
engine's worker-slot gauges and the dispatcher's registry of live workers agree on it)."""

from __future__ import annotations

import datetime as dt

from schemas import WorkerHeartbeat, WorkerStatus

# A worker beats every 2 s; three missed beats and it is presumed dead.
DEAD_AFTER_S = 6.0


def seconds_since(hb: WorkerHeartbeat, now: dt.datetime) -> float:
    return (now - dt.datetime.fromisoformat(hb.at)).total_seconds()


def alive(hb: WorkerHeartbeat, now: dt.datetime) -> bool:
    """Not stopped, and heard from within ``DEAD_AFTER_S``."""
    return hb.status is not WorkerStatus.STOPPED and seconds_since(hb, now) <= DEAD_AFTER_S
