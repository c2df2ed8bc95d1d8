"""Concurrency keys end to end, on real NATS and Postgres (issue 15): 3 keys x 50 runs with
max_runs=1 per key across 4 workers never have two runs of a key in flight (read from the
attempts' intervals in Postgres); a run held for its key says so; CANCEL_NEWEST cancels
the new run, CANCEL_IN_PROGRESS the old one."""

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
from tests.support import (
    assert_one_at_a_time,
    hatchet_for,
    run_all_on_workers,
    second_while_first_runs,
)
from worker import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    Context,
    Hatchet,
)

pytestmark = pytest.mark.timeout(180)

KEYS, PER_KEY = 3, 50


async def test_three_keys_of_fifty_runs_never_run_two_of_a_key_at_once_across_four_workers(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(
        name="PerUser",
        concurrency=ConcurrencyExpression("input.user", max_runs=1),
    )

    @wf.task()
    async def work(input: Any, ctx: Context) -> int:
        await asyncio.sleep(0.02)
        return 1

    runs = [
        {"workflow_name": "PerUser", "input": {"user": f"u{k}", "n": n}}
        for n in range(PER_KEY)
        for k in range(KEYS)
    ]
    await run_all_on_workers(hatchet, wf, runs)

    async def projected() -> list[tuple[str, dt.datetime, dt.datetime, str]] | None:
        cur = await db.execute(
            "SELECT r.concurrency_key, a.started_at, a.finished_at, a.worker_name"
            " FROM attempts a JOIN runs r ON r.tenant = a.tenant AND r.id = a.run_id"
            " WHERE a.tenant = %s AND a.status = 'SUCCEEDED'",
            (tenant_name,),
        )
        rows = await cur.fetchall()
        return rows if len(rows) == KEYS * PER_KEY else None

    rows = await eventually(projected, timeout_s=60)
    assert_one_at_a_time(rows, [f"u{k}" for k in range(KEYS)], "a run")


def holder(hatchet: Hatchet, name: str, strategy: ConcurrencyLimitStrategy) -> Any:
    release = asyncio.Event()
    wf = hatchet.workflow(
        name=name,
        concurrency=ConcurrencyExpression("input.user", max_runs=1, limit_strategy=strategy),
    )

    @wf.task()
    async def hold(input: Any, ctx: Context) -> str:
        await release.wait()
        return "done"

    return wf, release


async def test_a_held_run_says_why_and_runs_once_its_key_has_room(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf, release = holder(hatchet, "Held", ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN)
    async with running(hatchet.worker("w", slots=4, workflows=[wf])):
        first = await wf.aio_run_no_wait({"user": "ada"})
        second = await wf.aio_run_no_wait({"user": "ada"})
        other = await wf.aio_run_no_wait({"user": "bob"})  # another key: not held

        async def held() -> dict[str, Any] | None:
            run = await get_run(db, second.workflow_run_id, tenant=tenant_name)
            return run if run and run.get("waiting_for") else None

        waiting = await eventually(held, timeout_s=30)
        assert waiting["status"] == "QUEUED"
        assert "concurrency key 'ada'" in waiting["waiting_for"]
        bob = await eventually(
            lambda: get_run(db, other.workflow_run_id, tenant=tenant_name), timeout_s=30
        )
        assert bob["waiting_for"] is None
        release.set()
        for ref in (first, second, other):
            assert (await asyncio.wait_for(ref.aio_result(), 30)) == {"hold": "done"}
    hatchet.close()


@pytest.mark.parametrize(
    ("strategy", "cancelled"),
    [
        (ConcurrencyLimitStrategy.CANCEL_NEWEST, "second"),
        (ConcurrencyLimitStrategy.CANCEL_IN_PROGRESS, "first"),
    ],
)
async def test_a_cancel_strategy_cancels_exactly_the_run_it_names(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    strategy: ConcurrencyLimitStrategy,
    cancelled: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf, release = holder(hatchet, "Capped", strategy)
    async with running(hatchet.worker("w", slots=4, workflows=[wf])):
        contest = await second_while_first_runs(db, tenant_name, wf, release, cancelled)
    assert contest.won == {"hold": "done"}
    loser = contest.loser
    hatchet.close()
    assert loser["status"] == "CANCELLED"
    assert "concurrency key 'ada'" in loser["error"]
