"""Priority end to end, on real NATS and Postgres (issue 15): with the one worker of a
workflow busy, 5 runs of priority 3 queued after 20 of priority 1 all start before any of
those 20 (start times from Postgres), and a held step says why; equal priorities still
spread over two workers."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from tests.conftest import eventually, running
from tests.support import hatchet_for, natchet_cli
from worker import Context

pytestmark = pytest.mark.timeout(180)


async def _started(
    db: psycopg.AsyncConnection[Any], tenant: str, count: int
) -> dict[str, tuple[dt.datetime, str]]:
    """Each run's first attempt's start and worker, once ``count`` runs succeeded."""

    async def projected() -> dict[str, tuple[dt.datetime, str]] | None:
        cur = await db.execute(
            "SELECT run_id, started_at, worker_name FROM attempts"
            " WHERE tenant = %s AND status = 'SUCCEEDED'",
            (tenant,),
        )
        rows = await cur.fetchall()
        return {r[0]: (r[1], r[2]) for r in rows} if len(rows) >= count else None

    return await eventually(projected, timeout_s=60)


async def test_high_priority_runs_queued_last_start_before_the_low_ones_queued_first(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    release = asyncio.Event()
    wf = hatchet.workflow(name="Prio", default_priority=1)

    @wf.task()
    async def work(input: Any, ctx: Context) -> int:
        if ctx.workflow_input().get("block"):
            await release.wait()
        else:
            await asyncio.sleep(0.02)
        return 1

    async with running(hatchet.worker("only", slots=1, workflows=[wf])):
        blocker = await wf.aio_run_no_wait({"block": True})

        async def busy() -> bool:
            run = await get_run(db, blocker.workflow_run_id, tenant=tenant_name)
            return bool(run and run["status"] == "RUNNING")

        await eventually(busy, timeout_s=30)
        low = [await wf.aio_run_no_wait({"n": n}) for n in range(20)]
        high = [await wf.aio_run_no_wait({"n": n}, {"priority": 3}) for n in range(5)]

        async def held() -> dict[str, Any] | None:
            run = await get_run(db, high[-1].workflow_run_id, tenant=tenant_name)
            return run if run and run["steps"][0]["waiting_for"] else None

        waiting = await eventually(held, timeout_s=30)
        release.set()
        for ref in [blocker, *low, *high]:
            await asyncio.wait_for(ref.aio_result(), 60)
    hatchet.close()

    started = await _started(db, tenant_name, 26)
    last_high = max(started[r.workflow_run_id][0] for r in high)
    first_low = min(started[r.workflow_run_id][0] for r in low)
    assert last_high < first_low, (last_high, first_low)
    # runs get says why it waited: its priority, and the workers' capacity of 1
    assert waiting["status"] == "QUEUED"
    reason = waiting["steps"][0]["waiting_for"]
    assert reason.startswith("priority 3: ") and "capacity 1" in reason, reason
    # the read model keeps each run's priority: the trigger's, else the workflow's default
    assert waiting["priority"] == 3
    low_run = await get_run(db, low[0].workflow_run_id, tenant=tenant_name)
    assert low_run is not None and low_run["priority"] == 1
    out = await natchet_cli(
        nats_server.url, dsn, "runs", "get", high[0].workflow_run_id, "--tenant", tenant_name
    )
    assert "  priority: 3\n" in out, out


async def test_equal_priorities_still_spread_over_the_workers(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Even", default_priority=2)

    @wf.task()
    async def work(input: Any, ctx: Context) -> int:
        await asyncio.sleep(0.05)
        return 1

    async with (
        running(hatchet.worker("a", slots=2, workflows=[wf])),
        running(hatchet.worker("b", slots=2, workflows=[wf])),
    ):
        refs = [await wf.aio_run_no_wait({"n": n}) for n in range(24)]
        for ref in refs:
            await asyncio.wait_for(ref.aio_result(), 60)
    hatchet.close()
    started = await _started(db, tenant_name, 24)
    workers = [w for _s, w in started.values()]
    assert {workers.count("a"), workers.count("b")} != {0, 24}, workers
    assert min(workers.count("a"), workers.count("b")) >= 4, workers
