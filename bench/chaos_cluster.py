"""What the chaos harness reads off a NATS cluster and the log when a node is killed:

* :func:`stream_leader`: which node leads a stream (the hard node to lose: its clients'
  pull requests and the stream's writes move to a new leader);
* :func:`caught_up`: until a restarted node holds a current copy (lag 0) of every stream
  of the tenant;
* :func:`duplicate_msg_ids`: ``Nats-Msg-Id`` values stored twice in the log (the dedup
  window would have refused a repeat inside it; any here is a transition appended twice);
* :func:`rate_recovery`: from the runs' start times, how long after the kill runs started
  at the load's rate again, and the longest pause between two run starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections import Counter
from collections.abc import Sequence

import attrs
import nats.errors
from nats.aio.client import Client as NATS

from eventstore import NatchetError
from eventstore.tail import read_to_end
from schemas.subjects import live_stream_name, schedules_stream_name, stream_name, tasks_stream_name

MSG_ID = "Nats-Msg-Id"


def tenant_streams(tenant: str) -> list[str]:
    """Every stream provisioning creates for ``tenant``."""
    return [
        stream_name(tenant),
        tasks_stream_name(tenant),
        live_stream_name(tenant),
        schedules_stream_name(tenant),
        f"OBJ_snap-{tenant}",
    ]


async def stream_leader(nc: NATS, stream: str) -> str:
    info = await nc.jetstream().stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
    return str(info.cluster.leader)


@attrs.frozen
class Replicas:
    """One stream's copies as its leader reports them."""

    stream: str
    num_replicas: int
    leader: str | None
    peers: tuple[tuple[str, bool, int], ...]  # (node, current, lag)

    def holds_current_copy(self, node: str) -> bool:
        if self.leader == node:
            return True
        return any(name == node and current and not lag for name, current, lag in self.peers)


async def replicas(nc: NATS, stream: str) -> Replicas:
    info = await nc.jetstream().stream_info(stream)
    cluster = info.cluster
    peers = (
        tuple((r.name, bool(r.current), int(r.lag or 0)) for r in (cluster.replicas or []))
        if cluster
        else ()
    )
    return Replicas(
        stream, int(info.config.num_replicas or 1), cluster.leader if cluster else None, peers
    )


async def caught_up(nc: NATS, streams: Sequence[str], node: str, timeout_s: float) -> float:
    """Seconds until ``node`` holds a current copy, lag 0, of every one of ``streams``
    (each seen so at least once; under load a copy is current between two writes)."""
    began = time.monotonic()
    waiting = set(streams)
    while waiting:
        for stream in sorted(waiting):
            try:
                if (await replicas(nc, stream)).holds_current_copy(node):
                    waiting.discard(stream)
            except (NatchetError, nats.errors.Error, TimeoutError):
                pass  # the cluster may still be electing a leader
        if not waiting:
            break
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"{node} not current within {timeout_s:g}s on {sorted(waiting)}")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def duplicate_msg_ids(nc: NATS, tenant: str) -> list[str]:
    """Dedup ids stored more than once in the tenant's log."""
    seen: Counter[str] = Counter()
    async for rec in read_to_end(nc, stream_name(tenant)):
        msg_id = (rec.headers or {}).get(MSG_ID)
        if msg_id:
            seen[msg_id] += 1
    return [f"{msg_id} x{n}" for msg_id, n in seen.items() if n > 1]


@attrs.frozen
class Recovery:
    recovered_s: float | None  # kill -> the first window with runs starting at half the rate
    max_gap_s: float  # the longest pause between two run starts after the kill


def rate_recovery(
    starts: Sequence[dt.datetime], killed_at: dt.datetime, rate_per_s: float, window_s: float = 2.0
) -> Recovery:
    """From the start times of the runs: when, after ``killed_at``, a ``window_s`` window
    first held at least half the runs the load starts in it; and the longest pause."""
    after = sorted(t for t in starts if t >= killed_at)
    points = [killed_at, *after]
    gap = max((b - a).total_seconds() for a, b in itertools.pairwise(points)) if after else 0.0
    need = max(1, int(rate_per_s * window_s / 2))
    for i, first in enumerate(after):
        if i + need - 1 < len(after) and (after[i + need - 1] - first).total_seconds() <= window_s:
            return Recovery((first - killed_at).total_seconds(), gap)
    return Recovery(None, gap)
