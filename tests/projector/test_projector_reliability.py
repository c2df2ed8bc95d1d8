"""The reliability paths in the read model: retries with backoff, tasks handed back at
shutdown, lost deliveries, cancellation, on-failure steps; worker heartbeats (not
projected). Tenants are in test_projector_tenants.py, upgrades in
test_projector_migrations.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import (
    HANDED_BACK,
    LOST,
    RUN_ENDED,
    SINGLE_STEPS,
    W1,
    W2,
    History,
    Writer,
    at,
    expected_run,
    read_all,
    write_history,
)

import eventstore
import schemas
from eventstore import Append, Record
from projector import Projector, apply_records, dump_tables, get_run, migrate
from projector.migrations import set_search_path
from schemas import (
    RunCreated,
    StepResult,
    WorkerHeartbeat,
    WorkerStatus,
)

WAIT_S = 30.0
Conn = psycopg.AsyncConnection[Any]


async def project(conn: Conn, tenant: str, records: list[Record], upto: int | None = None) -> str:
    """A fresh schema holding ``records`` up to sequence ``upto``; its name."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    if upto is not None:
        records = [r for r in records if r.seq <= upto]
    await apply_records(conn, tenant, records, schema=schema)
    return schema


async def run_at(conn: Conn, tenant: str, records: list[Record], run_id: str, upto: int) -> Any:
    run = await get_run(
        conn, run_id, tenant=tenant, schema=await project(conn, tenant, records, upto)
    )
    assert run is not None
    return run


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["steps"]}


def tries(step: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(attempt, delivery, worker, status, error, finished_at) of each attempt."""
    return [
        (a["attempt"], a["delivery"], a["worker_id"], a["status"], a["error"], a["finished_at"])
        for a in step["attempts"]
    ]


async def step_attempt(
    conn: Conn, tenant: str, run_id: str, step: str, schema: str = "public"
) -> Any:
    async with conn.transaction():
        await set_search_path(conn, schema)
        cur = await conn.execute(
            "SELECT attempt FROM steps WHERE tenant = %s AND run_id = %s AND name = %s",
            (tenant, run_id, step),
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0]


async def history_and_records(nc: NATS, tenant: str) -> tuple[History, list[Record]]:
    history = await write_history(nc, tenant)
    return history, await read_all(nc, tenant)


async def test_retry_with_backoff_then_success(nc: NATS, tenant: str, conn: Conn) -> None:
    h, records = await history_and_records(nc, tenant)
    r = h.retry
    t = r.t

    waiting = steps(await run_at(conn, tenant, records, r.run_id, r.marks["scheduled"]))["s"]
    assert waiting["status"] == "QUEUED"
    assert waiting["error"] == "boom 1"
    assert waiting["retry_due_at"] == at(t + 5)
    assert tries(waiting) == [(1, 1, W1[0], "FAILED", "boom 1", at(t + 3))]
    schema = await project(conn, tenant, records, r.marks["scheduled"])
    assert await step_attempt(conn, tenant, r.run_id, "s", schema) == 2

    requeued = steps(await run_at(conn, tenant, records, r.run_id, r.marks["queued"]))["s"]
    assert requeued["status"] == "QUEUED"
    assert requeued["retry_due_at"] is None
    assert requeued["queued_at"] == at(t + 1)  # the earliest

    await migrate(conn)
    await apply_records(conn, tenant, records)
    run = await get_run(conn, r.run_id, tenant=tenant)
    assert run is not None
    assert run["status"] == "SUCCEEDED"
    assert [s["name"] for s in run["steps"]] == ["s", "t", "cleanup"]
    s, cleanup = steps(run)["s"], steps(run)["cleanup"]
    assert (s["status"], s["output"], s["error"], s["retry_due_at"]) == (
        "SUCCEEDED",
        {"s": 2},
        None,
        None,
    )
    assert (s["queued_at"], s["started_at"], s["finished_at"]) == (at(t + 1), at(t + 2), at(t + 8))
    assert tries(s) == [
        (1, 1, W1[0], "FAILED", "boom 1", at(t + 3)),
        (2, 1, W2[0], "SUCCEEDED", None, at(t + 7)),
    ]
    assert steps(run)["t"]["on_failure"] is False
    assert cleanup["on_failure"] is True
    assert (cleanup["status"], cleanup["error"], cleanup["parents"], cleanup["attempts"]) == (
        "CANCELLED",
        "the run succeeded without it",
        [],
        [],
    )
    assert await step_attempt(conn, tenant, r.run_id, "s") == 2
    assert await step_attempt(conn, tenant, r.run_id, "cleanup") is None  # never queued


async def test_handed_back_then_redelivered(nc: NATS, tenant: str, conn: Conn) -> None:
    h, records = await history_and_records(nc, tenant)
    r = h.handed_back
    t = r.t

    run = await run_at(conn, tenant, records, r.run_id, r.marks["handed_back"])
    assert run["status"] == "RUNNING"
    s = steps(run)["s"]
    assert s["status"] == "QUEUED"
    assert tries(s) == [(1, 1, W1[0], "CANCELLED", HANDED_BACK, at(t + 3))]

    run = await run_at(conn, tenant, records, r.run_id, r.last_seq)
    assert run["status"] == "SUCCEEDED"
    s = steps(run)["s"]
    assert (s["status"], s["output"], s["started_at"]) == ("SUCCEEDED", {"s": 1}, at(t + 2))
    assert tries(s) == [
        (1, 1, W1[0], "CANCELLED", HANDED_BACK, at(t + 3)),
        (1, 2, W2[0], "SUCCEEDED", None, at(t + 5)),
    ]


async def test_handed_back_after_the_next_delivery_keeps_the_step_running(
    nc: NATS, tenant: str, conn: Conn
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    r = str(uuid.uuid4())
    await w.created(r, 0, single=True)
    await w.put(*w.queue(r, "s", 1, 1, "single"))
    await w.put(w.assign((r, "s", 1, 1), W1, 2))
    await w.put(w.assign((r, "s", 1, 2), W2, 3))
    await w.put(
        StepResult(r, "s", 1, 1, W1[0], False, error="bye", finished_at=at(4), handed_back=True)
    )
    await migrate(conn)
    await apply_records(conn, tenant, await read_all(nc, tenant))
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None
    s = steps(run)["s"]
    assert s["status"] == "RUNNING"
    assert tries(s) == [
        (1, 1, W1[0], "CANCELLED", "bye", at(4)),  # its own error, newer than LOST
        (1, 2, W2[0], "RUNNING", None, None),
    ]


async def test_lost_delivery_then_redelivery_succeeds(nc: NATS, tenant: str, conn: Conn) -> None:
    h, records = await history_and_records(nc, tenant)
    r = h.lost
    t = r.t

    s = steps(await run_at(conn, tenant, records, r.run_id, r.marks["redelivered"]))["s"]
    assert s["status"] == "RUNNING"
    assert tries(s) == [
        (1, 1, W1[0], "LOST", LOST, at(t + 4)),
        (1, 2, W2[0], "RUNNING", None, None),
    ]

    run = await run_at(conn, tenant, records, r.run_id, r.marks["finished"])
    assert run["status"] == "SUCCEEDED"
    assert tries(steps(run)["s"]) == [
        (1, 1, W1[0], "LOST", LOST, at(t + 4)),
        (1, 2, W2[0], "SUCCEEDED", None, at(t + 5)),
    ]

    # w-1's late result is newer than the verdict that it was lost: it wins.
    run = await run_at(conn, tenant, records, r.run_id, r.last_seq)
    s = steps(run)["s"]
    assert (s["status"], s["output"]) == ("SUCCEEDED", {"s": 1})
    assert tries(s) == [
        (1, 1, W1[0], "FAILED", "w-1 came back", at(t + 7)),
        (1, 2, W2[0], "SUCCEEDED", None, at(t + 5)),
    ]
    assert s["logs"] == [{"at": at(t + 2.5), "line": "working", "attempt": 1}]


async def test_cancel(nc: NATS, tenant: str, conn: Conn) -> None:
    h, records = await history_and_records(nc, tenant)
    r = h.cancel
    t = r.t

    run = await run_at(conn, tenant, records, r.run_id, r.marks["requested"])
    assert (run["status"], run["cancel_requested_at"], run["cancel_reason"]) == (
        "RUNNING",
        at(t + 3),
        "not needed",
    )
    assert steps(run)["s"]["status"] == "RUNNING"

    why = "the run ended CANCELLED"
    run = await run_at(conn, tenant, records, r.run_id, r.marks["finished"])
    assert (run["status"], run["error"], run["finished_at"]) == (
        "CANCELLED",
        "cancelled: not needed",
        at(t + 4),
    )
    assert {n: (s["status"], s["error"]) for n, s in steps(run).items()} == {
        "s": ("CANCELLED", why),
        "t": ("CANCELLED", why),
        "cleanup": ("CANCELLED", why),
    }
    assert tries(steps(run)["s"]) == [(1, 1, W1[0], "CANCELLED", RUN_ENDED, at(t + 4))]

    # The second request came after the end (ignored); w-1's late result still counts.
    schema = await project(conn, tenant, records)
    run = await get_run(conn, r.run_id, tenant=tenant, schema=schema)
    assert run is not None
    assert (run["status"], run["cancel_requested_at"], run["cancel_reason"]) == (
        "CANCELLED",
        at(t + 3),
        "not needed",
    )
    assert steps(run)["s"]["status"] == "CANCELLED"
    assert tries(steps(run)["s"]) == [(1, 1, W1[0], "SUCCEEDED", None, at(t + 6))]
    assert await step_attempt(conn, tenant, r.run_id, "s", schema) == 1
    assert await step_attempt(conn, tenant, r.run_id, "t", schema) is None


async def test_on_failure_step(nc: NATS, tenant: str, conn: Conn) -> None:
    h, records = await history_and_records(nc, tenant)
    r = h.on_failure
    t = r.t
    run = await run_at(conn, tenant, records, r.run_id, r.last_seq)
    assert (run["status"], run["error"]) == ("FAILED", "step 's' failed: bad input")
    assert [s["name"] for s in run["steps"]] == ["s", "t", "cleanup"]
    s, t_step, cleanup = (steps(run)[n] for n in ("s", "t", "cleanup"))
    assert (s["status"], s["error"], s["on_failure"]) == ("FAILED", "bad input", False)
    assert tries(s) == [(1, 1, W1[0], "FAILED", "bad input", at(t + 3))]
    assert (t_step["status"], t_step["error"], t_step["attempts"]) == (
        "CANCELLED",
        "the run ended FAILED",
        [],
    )
    assert cleanup == {
        "name": "cleanup",
        "parents": [],
        "status": "SUCCEEDED",
        "output": {"cleaned": True},
        "error": None,
        "queued_at": at(t + 4),
        "started_at": at(t + 5),
        "finished_at": at(t + 7),
        "retry_due_at": None,
        "on_failure": True,
        "on_success": False,
        "waiting_for": None,
        "waits": [],
        "attempts": [
            {
                "attempt": 1,
                "delivery": 1,
                "worker_id": W2[0],
                "worker_name": W2[1],
                "status": "SUCCEEDED",
                "started_at": at(t + 5),
                "finished_at": at(t + 6),
                "error": None,
            }
        ],
        "logs": [{"at": at(t + 5.5), "line": "cleaning up", "attempt": 1}],
    }


def who(step: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(attempt, delivery, (worker id, name), status, started_at, finished_at) of each."""
    return [
        (a["attempt"], a["delivery"], (a["worker_id"], a["worker_name"]), a["status"],
         a["started_at"], a["finished_at"])
        for a in step["attempts"]
    ]  # fmt: skip


async def test_results_that_carry_their_assignment(nc: NATS, tenant: str, conn: Conn) -> None:
    """Today's worker appends no ``assigned`` for a step done within its grace: the result
    says which worker ran the attempt and when it started, and does what the assignment
    did (an earlier delivery lost, the step and the run running)."""
    h, records = await history_and_records(nc, tenant)
    r = h.fast_steps
    t = r.t
    lost = (1, 1, W1, "LOST", at(t + 2), at(t + 3))
    handed_back = (1, 2, W2, "CANCELLED", at(t + 3), at(t + 3.01))

    run = await run_at(conn, tenant, records, r.run_id, r.marks["handed_back"])
    assert (run["status"], run["started_at"]) == ("RUNNING", at(t + 2))
    s = steps(run)["s"]
    assert (s["status"], s["started_at"]) == ("QUEUED", at(t + 2))
    assert who(s) == [lost, handed_back]

    s = steps(await run_at(conn, tenant, records, r.run_id, r.marks["result"]))["s"]
    assert s["status"] == "RUNNING"  # until the dispatcher's verdict
    assert who(s) == [lost, handed_back, (1, 3, W1, "SUCCEEDED", at(t + 4), at(t + 4.02))]

    run = await run_at(conn, tenant, records, r.run_id, r.last_seq)
    assert run["status"] == "SUCCEEDED"
    s, t_step = steps(run)["s"], steps(run)["t"]
    assert (s["status"], s["output"]) == ("SUCCEEDED", {"s": 3})
    # A slow step: its assigned, then a result carrying the same assignment.
    assert (t_step["status"], t_step["started_at"]) == ("SUCCEEDED", at(t + 6))
    assert who(t_step) == [(1, 1, W2, "SUCCEEDED", at(t + 6), at(t + 7))]


async def test_a_result_projects_the_same_with_or_without_its_assigned(
    conn: Conn, tenant: str
) -> None:
    """The rows of a run are the same whether its result alone carries the assignment, or
    an ``assigned`` came before it, or one was stored again after it."""
    w = Writer(None, schemas.Scope(tenant))  # type: ignore[arg-type]
    r = str(uuid.uuid4())
    k = (r, "s", 1, 1)
    created = RunCreated(r, "single", "v1", {"n": 1}, SINGLE_STEPS, created_at=at(0))
    task = w.queue(r, "s", 1, 1, "single")[1]
    result = w.carried(k, W1, 2, 3, {"s": 1})
    assigned = w.assign(k, W1, 2)
    end = [w.done(k, {"s": 1}, 4), schemas.RunFinished(r, schemas.RunStatus.SUCCEEDED, at=at(4))]
    logs = {
        "alone": [created, task, result, *end],
        "assigned first": [created, task, assigned, result, *end],
        "assigned after": [created, task, result, assigned, *end],
        "assigned at the end": [created, task, result, *end, assigned],
    }
    runs = {}
    for name, messages in logs.items():
        appends = [w.msg(m) for m in messages]
        records = [Record(i, a.subject, a.body) for i, a in enumerate(appends, start=1)]
        runs[name] = await get_run(
            conn, r, tenant=tenant, schema=await project(conn, tenant, records)
        )
    assert runs["alone"] is not None
    assert who(steps(runs["alone"])["s"]) == [(1, 1, W1, "SUCCEEDED", at(2), at(3))]
    assert (runs["alone"]["started_at"], steps(runs["alone"])["s"]["started_at"]) == (
        at(2),
        at(2),
    )
    for name, run in runs.items():
        assert run == runs["alone"], name


async def test_worker_heartbeats_are_not_projected(
    nc: NATS, tenant: str, dsn: str, conn: Conn
) -> None:
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)

    def beat(n: int) -> Append:
        hb = WorkerHeartbeat(
            f"w-{n}", "worker", ("flaky:s",), 4, 0, WorkerStatus.ACTIVE, started_at=at(0)
        )
        return Append(scope.worker(f"w-{n}"), schemas.encode(hb), ttl_s=1)

    await eventstore.append(nc, beat(1))
    await eventstore.append(nc, Append(scope.worker("w-9"), b"not json", ttl_s=1))
    history = await write_history(nc, tenant)
    await eventstore.append(nc, beat(2))
    await w.diamond(t=200)  # the stream ends with a run message, not a heartbeat
    async with Projector(nc, dsn, tenant) as p:
        await p.wait_caught_up(timeout_s=WAIT_S)
    live = await dump_tables(conn)
    assert live["rejections"] == []
    assert len(live["runs"]) == 9

    # Once the heartbeats aged out of the log, a rebuild still comes back identical.
    async def expired() -> bool:
        return not any(".workers." in r.subject for r in await read_all(nc, tenant))

    for _ in range(100):
        if await expired():
            break
        await asyncio.sleep(0.1)
    assert await expired()
    assert await dump_tables(conn, await project(conn, tenant, await read_all(nc, tenant))) == live
    assert (await get_run(conn, history.diamond.run_id, tenant=tenant)) == expected_run(
        history.diamond, tenant
    )


async def test_created_for_an_unknown_single_step_run_has_no_on_failure_step(
    nc: NATS, tenant: str, conn: Conn
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    r = str(uuid.uuid4())
    await w.put(RunCreated(r, "single", "v1", None, SINGLE_STEPS, created_at=at(0)))
    await migrate(conn)
    await apply_records(conn, tenant, await read_all(nc, tenant))
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None
    assert [(s["name"], s["status"], s["on_failure"]) for s in run["steps"]] == [
        ("s", "PENDING", False)
    ]
