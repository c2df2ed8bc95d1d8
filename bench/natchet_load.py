"""The natchet side's load and observation, inside one event loop of the harness:

* :func:`publish_burst` and :func:`publish_paced` publish events with a bare NATS publish
  on ``<tenant>.default.events.<key>`` (no SDK, no headers, no JetStream ack), each body
  stamped with its creation time;
* :class:`RunPoller` watches Postgres for runs that became ``SUCCEEDED``: when it first
  saw each, and the ``finished_at`` the projector stored (the dispatcher's time in the
  run's ``finished`` message), which is the projection lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import attrs
import orjson
import psycopg
from nats.aio.client import Client as NATS

from bench.natchet_stack import TENANT

FLUSH_EVERY = 256


def _body(scenario: str, kind: str, i: int) -> bytes:
    return orjson.dumps({"t": time.time(), "k": kind, "s": scenario, "i": i})


async def publish_burst(nc: NATS, subject: str, n: int, scenario: str, kind: str) -> list[float]:
    """``n`` events as fast as the client goes; returns when the server has them all."""
    published: list[float] = []
    for i in range(n):
        published.append(time.time())
        await nc.publish(subject, _body(scenario, kind, i))
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            await nc.flush()
    await nc.flush()
    return published


async def publish_paced(
    nc: NATS, subject: str, rate_per_s: float, duration_s: float, scenario: str, kind: str
) -> list[float]:
    """``rate_per_s`` events a second for ``duration_s``, on a fixed schedule (a late tick
    publishes everything due, so the rate holds on average); returns their creation times."""
    published: list[float] = []
    total = round(rate_per_s * duration_s)
    start = time.monotonic()
    while len(published) < total:
        due = min(total, int((time.monotonic() - start) * rate_per_s) + 1)
        while len(published) < due:
            published.append(time.time())
            await nc.publish(subject, _body(scenario, kind, len(published)))
        await asyncio.sleep(0.001)  # pacing: shapes the load, synchronizes nothing
    await nc.flush()
    return published


@attrs.frozen
class SeenRun:
    id: str
    kind: str
    t_event: float
    finished_at: float
    seen_at: float

    @property
    def lag_s(self) -> float:
        """From the run's ``finished`` decision to the poll that first saw it SUCCEEDED."""
        return self.seen_at - self.finished_at


QUERY = (
    "SELECT id, input->>'k', (input->>'t')::float8, extract(epoch FROM finished_at)::float8,"
    " last_seq FROM runs WHERE tenant = %s AND status = 'SUCCEEDED' AND last_seq > %s"
    " AND input->>'s' = %s"
)


class RunPoller:
    """Polls ``runs`` every ``interval_s`` for rows newly SUCCEEDED (those whose
    ``last_seq`` is past the highest seen: the projector commits in stream order)."""

    def __init__(self, database_url: str, scenario: str, interval_s: float) -> None:
        self.database_url = database_url
        self.scenario = scenario
        self.interval_s = interval_s
        self.seen: dict[str, SeenRun] = {}
        self.counts: dict[str, int] = {}
        self._watermark = 0
        self._task: asyncio.Task[None] | None = None

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def runs(self, kind: str) -> list[SeenRun]:
        return [r for r in self.seen.values() if r.kind == kind]

    async def __aenter__(self) -> RunPoller:
        conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        self._task = asyncio.create_task(self._poll(conn))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self, conn: psycopg.AsyncConnection) -> None:
        async with conn:
            while True:
                cur = await conn.execute(QUERY, (TENANT, self._watermark, self.scenario))
                rows = await cur.fetchall()
                now = time.time()
                for run_id, kind, t_event, finished_at, last_seq in rows:
                    self._watermark = max(self._watermark, last_seq)
                    if run_id not in self.seen:
                        self.seen[run_id] = SeenRun(run_id, kind, t_event, finished_at, now)
                        self.counts[kind] = self.counts.get(kind, 0) + 1
                await asyncio.sleep(self.interval_s)

    async def until(self, kind: str, n: int, deadline: float) -> bool:
        """Wait until ``n`` runs of ``kind`` are seen, or ``deadline`` (monotonic)."""
        while self.count(kind) < n:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True
