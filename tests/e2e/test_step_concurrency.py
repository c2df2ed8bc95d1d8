"""Step-level concurrency keys end to end, on real NATS and Postgres (issue 15): 3 keys x
20 runs whose second step has max_runs=1 per key, across 4 workers, never have that step
of two runs of a key in flight at once (attempt intervals in Postgres), while the first,
unkeyed step runs freely; a held step says why in runs get; a step key's CANCEL_IN_PROGRESS
cancels the run in flight and CANCEL_NEWEST the new one, the run's error (runs get) naming
the step and the key, its later steps never started."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from tests.conftest import eventually, running
from tests.e2e.test_cli_audit import natchet
from tests.support import (
    assert_one_at_a_time,
    hatchet_for,
    run_all_on_workers,
    run_ends,
    second_while_first_runs,
)
from worker import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    Context,
    Hatchet,
)

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


def _slow_then_after(
    hatchet: Hatchet, name: str, strategy: ConcurrencyLimitStrategy
) -> tuple[Any, asyncio.Event, set[str]]:
    """``slow`` (a key per user, max_runs 1, ``strategy``) waits for the event; ``after``
    follows it and records the runs it ran for."""
    release, ran_after = asyncio.Event(), set[str]()
    wf = hatchet.workflow(name=name)
    key = ConcurrencyExpression("input.user", max_runs=1, limit_strategy=strategy)

    @wf.task(concurrency=key)
    async def slow(input: Any, ctx: Context) -> str:
        await release.wait()
        return "done"

    @wf.task(parents=[slow])
    async def after(input: Any, ctx: Context) -> str:
        ran_after.add(ctx.workflow_run_id())
        return "after"

    return wf, release, ran_after


@pytest.mark.parametrize(
    ("strategy", "cancelled", "reason"),
    [
        (
            ConcurrencyLimitStrategy.CANCEL_IN_PROGRESS,
            "first",
            "cancelled: a newer task of step 'slow' concurrency key 'ada' took its place",
        ),
        (
            ConcurrencyLimitStrategy.CANCEL_NEWEST,
            "second",
            "cancelled: step 'slow' concurrency key 'ada' already has 1 task(s) in flight, "
            "and this run's is the newest (CANCEL_NEWEST)",
        ),
    ],
    ids=["CANCEL_IN_PROGRESS", "CANCEL_NEWEST"],
)
async def test_a_step_keys_cancel_strategy_cancels_the_run_it_names_and_its_later_steps(
    tmp_path: Path,
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    strategy: ConcurrencyLimitStrategy,
    cancelled: str,
    reason: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf, release, ran_after = _slow_then_after(hatchet, "StepCancel", strategy)
    async with running(hatchet.worker("w", slots=4, workflows=[wf])):
        contest = await second_while_first_runs(db, tenant_name, wf, release, cancelled)
        winner = contest.refs["second" if cancelled == "first" else "first"]
        won = await run_ends(db, winner.workflow_run_id, tenant=tenant_name)
    hatchet.close()
    assert contest.won == {"slow": "done", "after": "after"}
    loser = contest.loser
    assert (loser["status"], loser["error"]) == ("CANCELLED", reason)
    assert won["status"] == "SUCCEEDED"
    # the cancelled run's later step never started, on the worker or in the read model
    steps = {s["name"]: s for s in loser["steps"]}
    assert steps["after"]["status"] == "CANCELLED" and steps["after"]["attempts"] == []
    assert ran_after == {winner.workflow_run_id}
    if cancelled == "second":  # cancelled before its task was offered: nothing of it ran
        assert steps["slow"]["attempts"] == []
    else:  # its slow step was running: the worker cancelled it, and it never succeeded
        assert steps["slow"]["status"] == "CANCELLED"
        assert "SUCCEEDED" not in [a["status"] for a in steps["slow"]["attempts"]]
    loser_id = contest.refs[cancelled].workflow_run_id
    code, out, err = await natchet(
        tmp_path, nats_server, tenant_name, "runs", "get", loser_id, "--database-url", dsn
    )
    assert code == 0, err
    assert f"run {loser_id}  StepCancel  CANCELLED" in out
    assert f"error: {reason}" in out
