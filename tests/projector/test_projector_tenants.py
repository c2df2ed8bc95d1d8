"""Run ids are unique only within a tenant: the dispatcher derives them predictably and
clients choose those of direct runs. Two tenants using the same run id each get their own
run, steps, attempts and log lines; neither sees, changes or squats the other's."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import (
    W1,
    Writer,
    at,
    expected_run,
    flaky_workflow,
    read_all,
    single_workflow,
    workflow,
    write_history,
)

import eventstore
import schemas
from projector import Projector, apply_records, dump_tables, get_run, list_runs, migrate
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunStatus,
    StepAssigned,
    StepDef,
    StepFinished,
    StepLog,
    StepQueued,
    StepResult,
    StepRetryScheduled,
)

WAIT_S = 30.0
Conn = psycopg.AsyncConnection[Any]


async def other_tenant(nc: NATS, tenant: str) -> str:
    name = tenant[:-1] + ("x" if tenant[-1] != "x" else "y")
    await eventstore.ensure_tenant_stream(nc, name)
    return name


async def rows_of(conn: Conn, table: str, tenant: str, run_id: str) -> int:
    """How many rows of ``table`` are under ``tenant``'s run ``run_id``."""
    queries = {
        "runs": "SELECT count(*) FROM runs WHERE tenant = %s AND id = %s",
        "steps": "SELECT count(*) FROM steps WHERE tenant = %s AND run_id = %s",
        "attempts": "SELECT count(*) FROM attempts WHERE tenant = %s AND run_id = %s",
        "step_logs": "SELECT count(*) FROM step_logs WHERE tenant = %s AND run_id = %s",
    }
    async with conn.transaction():
        cur = await conn.execute(queries[table], (tenant, run_id))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_two_tenants_with_the_same_run_id_each_see_their_own(
    nc: NATS, tenant: str, dsn: str, conn: Conn
) -> None:
    a, b = tenant, await other_tenant(nc, tenant)
    shared, rejected = str(uuid.uuid4()), str(uuid.uuid4())
    wa, wb = Writer(nc, schemas.Scope(a)), Writer(nc, schemas.Scope(b))
    await wa.put(workflow())
    await wb.put(workflow())
    # a's run comes first, then b's of the same id (the squatting order), with other values.
    da = await wa.diamond(t=0, run_id=shared)
    db = await wb.diamond(t=50, run_id=shared)
    # One tenant's rejected run and the other's created run of one id, b first this time.
    await wb.rejected(t=60, run_id=rejected)
    dr = await wa.diamond(t=70, run_id=rejected)

    async with Projector(nc, dsn, a) as pa, Projector(nc, dsn, b) as pb:
        await pa.wait_caught_up(timeout_s=WAIT_S)
        await pb.wait_caught_up(timeout_s=WAIT_S)

    assert await get_run(conn, shared, tenant=a) == expected_run(da, a)
    assert await get_run(conn, shared, tenant=b) == expected_run(db, b)
    assert await get_run(conn, rejected, tenant=a) == expected_run(dr, a)
    run = await get_run(conn, rejected, tenant=b)
    assert run is not None
    assert (run["tenant"], run["status"], run["error"], run["steps"]) == (
        b,
        "FAILED",
        "unknown workflow 'nope'",
        [],
    )
    assert [r["id"] for r in await list_runs(conn, tenant=a)] == [rejected, shared]
    assert [r["id"] for r in await list_runs(conn, tenant=b)] == [rejected, shared]
    assert [(r["tenant"], r["id"]) for r in await list_runs(conn)] == [
        (a, rejected),  # created at 72: newest first
        (b, rejected),
        (b, shared),
        (a, shared),
    ]
    # Each tenant's rows under the shared id are its own diamond's: 4 steps, 6 attempts,
    # 3 log lines; the rejected run has none.
    for t in (a, b):
        under = [
            await rows_of(conn, table, t, shared) for table in ("steps", "attempts", "step_logs")
        ]
        assert under == [4, 6, 3], t
    assert [await rows_of(conn, table, b, rejected) for table in ("steps", "attempts")] == [0, 0]
    tables = await dump_tables(conn)
    assert tables["rejections"] == []
    assert len(tables["runs"]) == 4

    # A rebuild of both logs, in the other order, is identical.
    await migrate(conn, "rebuilt")
    await apply_records(conn, b, await read_all(nc, b), schema="rebuilt")
    await apply_records(conn, a, await read_all(nc, a), schema="rebuilt")
    assert await dump_tables(conn, "rebuilt") == tables


async def test_get_run_of_another_tenants_run_id_is_none(nc: NATS, tenant: str, conn: Conn) -> None:
    a, b = tenant, await other_tenant(nc, tenant)
    history = await write_history(nc, b)
    await migrate(conn)
    await apply_records(conn, b, await read_all(nc, b))
    for run_id in history.run_ids():
        assert await get_run(conn, run_id, tenant=b) is not None
        assert await get_run(conn, run_id, tenant=a) is None
    assert await list_runs(conn, tenant=a) == []


async def test_a_tenant_cannot_touch_another_tenants_run(nc: NATS, tenant: str, conn: Conn) -> None:
    """Every kind of run message on the victim's run ids, from the attacker's log: the
    victim's rows do not change; what the attacker writes lands under its own runs."""
    victim, attacker = tenant, await other_tenant(nc, tenant)
    history = await write_history(nc, victim)
    bw = Writer(nc, schemas.Scope(victim))
    pending = str(uuid.uuid4())  # a run of the victim's still in flight
    await bw.created(pending, 300, single=True)
    await bw.put(*bw.queue(pending, "s", 1, 301, "single"))
    await bw.put(bw.assign((pending, "s", 1, 1), W1, 302))
    await migrate(conn)
    await apply_records(conn, victim, await read_all(nc, victim))
    before = await dump_tables(conn)
    victim_runs = {rid: await get_run(conn, rid, tenant=victim) for rid in history.run_ids()}
    victim_runs[pending] = await get_run(conn, pending, tenant=victim)

    aw = Writer(nc, schemas.Scope(attacker))
    await aw.put(workflow(), flaky_workflow(), single_workflow())
    # Only the attacker's first id gets a run of its own; the others are messages about
    # runs the attacker never created.
    created, unknown = pending, [history.diamond.run_id, history.retry.run_id]
    for i, r in enumerate([created, *unknown]):
        t = 400.0 + 10 * i
        if r == created:
            steps = (StepDef("s"), StepDef("x"))
            await aw.put(RunCreated(r, "evil", "v6", {}, steps, created_at=at(t)))
            await aw.put(RunRejected(r, "evil", "nope", at=at(t)))  # too late: exists
        for step in ("s", "a", "x"):
            await aw.put(
                RunCancelRequested(r, "pwned", requested_at=at(t)),
                StepQueued(r, step, 5, queued_at=at(t)),
                StepRetryScheduled(r, step, 5, 6, due_at=at(t + 1), error="e", at=at(t)),
                StepAssigned(r, step, 1, 7, "evil", "evil", started_at=at(t + 1)),
                StepAssigned(r, step, 6, 1, "evil", "evil", started_at=at(t + 1)),
                StepLog(r, step, 1, 1, "pwned", at=at(t + 1)),
                StepResult(r, step, 1, 1, "evil", True, {"pwned": 1}, finished_at=at(t + 2)),
                StepResult(r, step, 1, 2, "evil", False, handed_back=True, finished_at=at(t)),
                StepFinished(r, step, 1, 1, RunStatus.CANCELLED, error="x", at=at(t + 3)),
                RunFinished(r, RunStatus.FAILED, "pwned", at=at(t + 3)),
            )
    await apply_records(conn, attacker, await read_all(nc, attacker))

    after = await dump_tables(conn)
    for table in ("runs", "steps", "attempts", "step_logs", "workflows", "events"):
        victims = [row for row in after[table] if attacker not in row]
        assert victims == before[table], table
    for rid, run in victim_runs.items():
        assert await get_run(conn, rid, tenant=victim) == run
    assert after["rejections"] == []

    # The attacker's own run of the victim's id: its own values, its own steps only.
    own = await get_run(conn, created, tenant=attacker)
    assert own is not None
    assert (own["tenant"], own["workflow"], own["status"], own["error"]) == (
        attacker,
        "evil",
        "FAILED",
        "pwned",
    )
    assert [s["name"] for s in own["steps"]] == ["s", "x"]
    assert all(s["status"] == "CANCELLED" for s in own["steps"])
    assert {line["line"] for s in own["steps"] for line in s["logs"]} == {"pwned"}
    assert [r["id"] for r in await list_runs(conn, tenant=attacker)] == [created]
    # Messages about runs the attacker never created leave no rows at all.
    for rid in unknown:
        assert await get_run(conn, rid, tenant=attacker) is None
        for table in ("runs", "steps", "attempts", "step_logs"):
            assert await rows_of(conn, table, attacker, rid) == 0, (rid, table)

    # And the same again changes nothing.
    await apply_records(conn, attacker, await read_all(nc, attacker))
    assert await dump_tables(conn) == after
