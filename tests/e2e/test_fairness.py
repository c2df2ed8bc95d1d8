"""Work spreads evenly over equally fast workers, never beyond a worker's max_runs, and a
slow worker's slack is taken up by the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import psycopg

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for
from worker import Context, Hatchet

WORKERS = 4
MAX_RUNS = 2


def fair_workflow(hatchet: Hatchet, step_s: float) -> Any:
    """A one-step workflow called Fair; workers may register bodies of different speed."""

    @hatchet.workflow(name="Fair")
    class Fair:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, int]:
            await asyncio.sleep(step_s)
            return {"n": context.workflow_input()["n"]}

    return Fair()


async def run_all(
    hatchet: Hatchet, db: psycopg.AsyncConnection[Any], tenant: str, speeds: list[float], runs: int
) -> tuple[list[Any], list[tuple[str, Any, Any]]]:
    workers = []
    for i, step_s in enumerate(speeds):
        w = hatchet.worker(f"w{i}", max_runs=MAX_RUNS)
        w.register_workflow(fair_workflow(hatchet, step_s))
        workers.append(w)
    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(running(w))
        await asyncio.gather(
            *(hatchet.admin.aio_run_workflow("Fair", {"n": n}) for n in range(runs))
        )

        async def all_succeeded() -> bool:
            cur = await db.execute(
                "SELECT count(*) FROM runs WHERE tenant = %s AND status = 'SUCCEEDED'", (tenant,)
            )
            row = await cur.fetchone()
            return row is not None and row[0] == runs

        await eventually(all_succeeded, timeout_s=120)
    cur = await db.execute(
        "SELECT a.worker_name, a.started_at, a.finished_at FROM attempts a "
        "JOIN runs r ON r.id = a.run_id WHERE r.tenant = %s",
        (tenant,),
    )
    return workers, list(await cur.fetchall())


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """Most intervals open at once (an end at t closes before a start at t opens)."""
    points = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1])
    )
    depth = peak = 0
    for _, delta in points:
        depth += delta
        peak = max(peak, depth)
    return peak


async def test_equal_workers_share_evenly_within_max_runs(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    runs = 320
    hatchet = hatchet_for(nats_server, tenant_name)
    workers, attempts = await run_all(hatchet, db, tenant_name, [0.02] * WORKERS, runs)
    hatchet.close()

    assert len(attempts) == runs  # one attempt per step: nothing ran twice
    share = Counter(name for name, _, _ in attempts)
    even = runs / WORKERS
    for count in share.values():
        assert 0.75 * even <= count <= 1.25 * even, share
    for w in workers:
        assert w.slots.peak <= MAX_RUNS
        spans = [(s, e) for name, s, e in attempts if name == w.name]
        assert max_overlap(spans) <= MAX_RUNS, w.name


async def test_slow_worker_slack_is_taken_up_by_the_others(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    runs = 200
    hatchet = hatchet_for(nats_server, tenant_name)
    speeds = [0.01, 0.01, 0.01, 0.25]  # w3 is 25 times slower
    workers, attempts = await run_all(hatchet, db, tenant_name, speeds, runs)
    hatchet.close()

    share = Counter(name for name, _, _ in attempts)
    even = runs / WORKERS
    assert share["w3"] < even / 2, share
    for fast in ("w0", "w1", "w2"):
        assert share[fast] > even, share
    for w in workers:
        spans = [(s, e) for name, s, e in attempts if name == w.name]
        assert max_overlap(spans) <= MAX_RUNS, w.name
