"""Step-level concurrency keys end to end, on real NATS and Postgres (issue 15): 3 keys x
20 runs whose second step has max_runs=1 per key, across 4 workers, never have that step
of two runs of a key in flight at once (attempt intervals in Postgres), while the first,
unkeyed step runs freely; a held step says why in runs get."""

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
from tests.support import assert_one_at_a_time, hatchet_for, run_all_on_workers
from worker import ConcurrencyExpression, Context

pytestmark = pytest.mark.timeout(180)

KEYS, PER_KEY = 3, 20


async def test_a_keyed_step_never_runs_twice_at_once_per_key_across_four_workers(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="PerUserStep")

    @wf.task()
    async def prep(input: Any, ctx: Context) -> int:
        return 1

    @wf.task(parents=[prep], concurrency=ConcurrencyExpression("input.user", max_runs=1))
    async def work(input: Any, ctx: Context) -> int:
        await asyncio.sleep(0.02)
        return 1

    runs = [
        {"workflow_name": "PerUserStep", "input": {"user": f"u{k}", "n": n}}
        for n in range(PER_KEY)
        for k in range(KEYS)
    ]
    await run_all_on_workers(hatchet, wf, runs)

    async def projected() -> list[tuple[Any, dt.datetime, dt.datetime, str]] | None:
        cur = await db.execute(
            "SELECT r.input, a.started_at, a.finished_at, a.worker_name"
            " FROM attempts a JOIN runs r ON r.tenant = a.tenant AND r.id = a.run_id"
            " WHERE a.tenant = %s AND a.status = 'SUCCEEDED' AND a.step = 'work'",
            (tenant_name,),
        )
        rows = await cur.fetchall()
        return rows if len(rows) == KEYS * PER_KEY else None

    rows = await eventually(projected, timeout_s=60)
    keyed = [(p["user"], started, finished, w) for p, started, finished, w in rows]
    assert_one_at_a_time(keyed, [f"u{k}" for k in range(KEYS)], "a keyed step")


async def test_a_step_held_for_its_key_says_why_and_runs_once_the_key_has_room(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    release = asyncio.Event()
    wf = hatchet.workflow(name="HeldStep")

    @wf.task(concurrency=ConcurrencyExpression("input.user", max_runs=1))
    async def hold(input: Any, ctx: Context) -> str:
        await release.wait()
        return "done"

    async with running(hatchet.worker("w", slots=4, workflows=[wf])):
        first = await wf.aio_run_no_wait({"user": "ada"})
        second = await wf.aio_run_no_wait({"user": "ada"})
        other = await wf.aio_run_no_wait({"user": "bob"})  # another key: not held

        async def held() -> dict[str, Any] | None:
            run = await get_run(db, second.workflow_run_id, tenant=tenant_name)
            text = repr(run)
            return run if run and "step concurrency key 'ada'" in text else None

        waiting = await eventually(held, timeout_s=30)
        assert waiting["status"] == "QUEUED"

        async def bob_runs() -> bool:
            run = await get_run(db, other.workflow_run_id, tenant=tenant_name)
            return bool(run and run["status"] == "RUNNING")

        await eventually(bob_runs, timeout_s=30)
        release.set()
        for ref in (first, second, other):
            assert (await asyncio.wait_for(ref.aio_result(), 30)) == {"hold": "done"}
    hatchet.close()
