"""Durable steps in the read model: a ``waiting`` makes its step WAITING (and says for
what), its delivery's attempt SUSPENDED and a ``step_waits`` row; its ``woken`` fills that
row; the step's task again (with ``wakes``) queues it again, and the resumed delivery runs
on to the end. Bad waits are rejected or ignored; a rebuild gives the live tables."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import W1, W2, Writer, at, read_all, single_workflow

import eventstore
import schemas
from eventstore import Append
from natchet.audit import as_of as as_of_view
from natchet.audit import decoded, entries, run_summary
from natchet.dev.embedded import NatsServer
from projector import Projector, apply_records, dump_tables, get_run, migrate
from projector.replay import replay
from schemas import RunFinished, RunStatus, Task
from schemas.durable import StepWaiting, StepWoken, WaitCondition, WaitKind
from tests.support import natchet_cli as natchet

WAIT_S = 30.0
SLEEP_UNTIL = "2025-01-02T04:00:00+00:00"
SAME_USER = "input.user_id == 42"
FIRST_WAIT = f"sleep until {SLEEP_UNTIL}"
SECOND_WAIT = f"event user:confirmed where {SAME_USER}, or sleep until {SLEEP_UNTIL}"


def sleep() -> WaitCondition:
    return WaitCondition(WaitKind.SLEEP, until=SLEEP_UNTIL)


def confirmed() -> WaitCondition:
    return WaitCondition(WaitKind.EVENT, event_key="user:confirmed", expression=SAME_USER)


def task(run_id: str, t: float, wakes: tuple[StepWoken, ...] = (), offset: int = 0) -> Task:
    return Task(
        run_id, "single", "s", 1, {"user_id": 42}, {}, 60.0, queued_at=at(t), wakes=wakes,
        delivery_offset=offset,
    )  # fmt: skip


async def durable_run(w: Writer, t: float = 0.0) -> tuple[str, dict[str, int]]:
    """A run whose step s waits twice within its attempt 1: a sleep (delivery 1, no
    ``assigned``: it waited at once), then an event or a sleep (delivery 2), and ends in
    delivery 3. Returns the run id and the sequence of each turning point."""
    r, marks = str(uuid.uuid4()), {}
    await w.created(r, t, single=True)
    marks["queued"] = await w.put(task(r, t + 1))
    marks["waiting"] = await w.put(
        StepWaiting(r, "s", 1, 1, 0, (sleep(),), W1[0], W1[1], at=at(t + 2))
    )
    slept = StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP, at=at(t + 3))
    marks["woken"] = await w.put(slept)
    marks["again"] = await w.put(task(r, t + 3, (slept,), 1))
    await w.put(w.assign((r, "s", 1, 2), W2, t + 4))
    marks["waiting2"] = await w.put(
        StepWaiting(r, "s", 1, 2, 1, (confirmed(), sleep()), W2[0], W2[1], at=at(t + 5))
    )
    heard = StepWoken(
        r, "s", 1, 1, 0, WaitKind.EVENT, event_key="user:confirmed", event_id="7",
        payload={"user_id": 42}, at=at(t + 6),
    )  # fmt: skip
    await w.put(heard)
    await w.put(task(r, t + 6, (slept, heard), 2))
    await w.put(w.carried((r, "s", 1, 3), W1, t + 7, t + 8, {"ok": True}))
    marks["end"] = await w.put(
        w.done((r, "s", 1, 3), {"ok": True}, t + 9),
        RunFinished(r, RunStatus.SUCCEEDED, at=at(t + 9)),
    )
    return r, marks


def upto(records: list[Any], seq: int) -> list[Any]:
    return [r for r in records if r.seq <= seq]


def the_step(run: dict[str, Any] | None) -> dict[str, Any]:
    assert run is not None
    (step,) = run["steps"]
    return step


def attempts(step: dict[str, Any]) -> list[tuple[int, int, str, str | None, str | None]]:
    return [
        (a["attempt"], a["delivery"], a["status"], a["started_at"], a["finished_at"])
        for a in step["attempts"]
    ]


async def test_waits_fold_into_the_read_model(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r, marks = await durable_run(w)
    records = await read_all(nc, tenant)
    await migrate(conn)

    await apply_records(conn, tenant, upto(records, marks["waiting"]))
    run = await get_run(conn, r, tenant=tenant)
    step = the_step(run)
    assert run is not None and run["status"] == "RUNNING" and run["started_at"] == at(2)
    assert (step["status"], step["waiting_for"], step["started_at"]) == (
        "WAITING",
        FIRST_WAIT,
        at(2),
    )
    assert attempts(step) == [(1, 1, "SUSPENDED", None, at(2))]
    (wait,) = step["waits"]
    assert wait == {
        "attempt": 1, "index": 0, "delivery": 1, "waiting_for": FIRST_WAIT,
        "conditions": [{"kind": "sleep", "until": SLEEP_UNTIL}], "worker_id": W1[0],
        "worker_name": W1[1], "waited_at": at(2), "woken_at": None, "condition": None,
        "kind": None, "event_key": None, "event_id": None,
    }  # fmt: skip

    # Woken: the wait says so; the step waits for its task.
    await apply_records(conn, tenant, upto(records, marks["woken"]))
    step = the_step(await get_run(conn, r, tenant=tenant))
    assert step["status"] == "WAITING"
    assert (step["waits"][0]["woken_at"], step["waits"][0]["kind"]) == (at(3), "sleep")

    # The task again (same attempt, with its wakes): queued again, nothing to wait for.
    await apply_records(conn, tenant, upto(records, marks["again"]))
    step = the_step(await get_run(conn, r, tenant=tenant))
    assert (step["status"], step["waiting_for"], step["queued_at"]) == ("QUEUED", None, at(1))

    # Delivery 2 runs, and waits on an event (or a sleep); delivery 1 stays SUSPENDED.
    await apply_records(conn, tenant, upto(records, marks["waiting2"]))
    step = the_step(await get_run(conn, r, tenant=tenant))
    assert (step["status"], step["waiting_for"]) == ("WAITING", SECOND_WAIT)
    assert attempts(step) == [
        (1, 1, "SUSPENDED", None, at(2)),
        (1, 2, "SUSPENDED", at(4), at(5)),
    ]

    await apply_records(conn, tenant, records)
    run = await get_run(conn, r, tenant=tenant)
    step = the_step(run)
    assert run is not None and run["status"] == "SUCCEEDED"
    assert (step["status"], step["waiting_for"], step["output"]) == (
        "SUCCEEDED",
        None,
        {"ok": True},
    )
    assert attempts(step) == [
        (1, 1, "SUSPENDED", None, at(2)),
        (1, 2, "SUSPENDED", at(4), at(5)),
        (1, 3, "SUCCEEDED", at(7), at(8)),
    ]
    assert [
        (x["index"], x["delivery"], x["waiting_for"], x["condition"], x["kind"], x["event_key"],
         x["event_id"], x["woken_at"])
        for x in step["waits"]
    ] == [
        (0, 1, FIRST_WAIT, 0, "sleep", None, None, at(3)),
        (1, 2, SECOND_WAIT, 0, "event", "user:confirmed", "7", at(6)),
    ]  # fmt: skip
    tables = await dump_tables(conn)
    assert [row[-2] for row in tables["step_waits"]] == [None, {"user_id": 42}]  # payload
    assert tables["rejections"] == []

    # Idempotent and batch-independent: again, shuffled, in small batches, changes nothing.
    once = await dump_tables(conn)
    for seed in range(3):
        shuffled = records * 2
        random.Random(seed).shuffle(shuffled)
        for i in range(0, len(shuffled), 5):
            await apply_records(conn, tenant, shuffled[i : i + 5])
        assert await dump_tables(conn) == once
    await migrate(conn, "whole")
    await apply_records(conn, tenant, records, schema="whole")
    assert await dump_tables(conn, "whole") == once


async def test_a_copy_of_an_assignment_after_a_wake_takes_the_step_no_more(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    """A worker's ``assigned`` stored again after the duplicate window, once the step's wait
    was woken and the step queued again: the step stays QUEUED, as without the copy (found
    by tests/property/test_projection.py, seed 33: the copy made it RUNNING)."""
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r = str(uuid.uuid4())
    await w.created(r, 0, single=True)
    await w.put(task(r, 1))
    await w.put(w.assign((r, "s", 1, 1), W1, 2))
    await w.put(StepWaiting(r, "s", 1, 1, 0, (sleep(),), W1[0], W1[1], at=at(3)))
    assigned = w.assign((r, "s", 1, 2), W2, 3.5)  # a redelivery taken while it waited
    await w.put(assigned)
    slept = StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP, at=at(4))
    await w.put(slept)
    again = await w.put(task(r, 4, (slept,), 2))
    records = await read_all(nc, tenant)
    await migrate(conn)
    await apply_records(conn, tenant, records)
    once = await dump_tables(conn)
    assert the_step(await get_run(conn, r, tenant=tenant))["status"] == "QUEUED"

    await w.put(assigned)  # the copy, under a sequence of its own
    copied = await read_all(nc, tenant)
    assert copied[-1].seq > again
    await migrate(conn, "copied")
    await apply_records(conn, tenant, copied, schema="copied")
    assert the_step(await get_run(conn, r, tenant=tenant, schema="copied"))["status"] == "QUEUED"
    tables = await dump_tables(conn, "copied")
    assert tables["steps"] == once["steps"] and tables["runs"] == once["runs"]


async def raw(nc: NATS, subject: str, body: bytes) -> int:
    return await eventstore.append(nc, Append(subject, body))


async def test_bad_waits_are_rejected_or_ignored(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)
    await w.put(single_workflow())
    r = str(uuid.uuid4())
    await w.created(r, 0, single=True)
    await w.put(task(r, 1))
    good = StepWaiting(r, "s", 1, 1, 0, (sleep(),), W1[0], W1[1], at=at(2))
    body = schemas.encode(good)
    no_until = body.replace(b'"until":"' + SLEEP_UNTIL.encode() + b'"', b'"until":null')
    rejected = {
        await raw(nc, scope.run(r, "waiting"), body.replace(b'"attempt":1', b'"attempt":"1"')): (
            "attempt"
        ),
        await raw(nc, scope.run("other", "waiting"), body): "differs from the subject",
        await w.put(StepWaiting(r, "s", 1, 1, 0, (), W1[0], W1[1], at=at(2))): (
            "at least one condition"
        ),
        await raw(nc, scope.run(r, "waiting"), no_until): "until must be an ISO-8601 string",
        await raw(nc, scope.run(r, "waiting"), body.replace(b'"sleep"', b'"nap"')): "nap",
        await raw(nc, scope.run(r, "woken"), b'{"run_id":"%s"}' % r.encode()): "woken",
        await raw(
            nc,
            scope.task("single", "s"),
            schemas.encode(task(r, 1, (StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP),))).replace(
                b'"condition":0', b'"condition":-1'
            ),
        ): "condition must be an integer",
    }
    # Well formed, but of no wait the run has: ignored.
    ignored = [
        StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP, at=at(2)),  # before any wait
        StepWaiting(r, "s", 2, 1, 0, (sleep(),), W1[0], W1[1], at=at(2)),  # not its attempt
        StepWaiting(r, "nope", 1, 1, 0, (sleep(),), W1[0], W1[1], at=at(2)),  # no such step
    ]
    await w.put(*ignored)
    await w.put(good)
    await w.put(StepWoken(r, "s", 1, 0, 5, WaitKind.SLEEP, at=at(3)))  # no condition 5
    await w.put(StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP, at=at(4)))
    await w.put(StepWoken(r, "s", 1, 0, 0, WaitKind.SLEEP, at=at(5)))  # woken once only
    # A waiting of a step that already finished changes nothing.
    await w.put(w.carried((r, "s", 1, 2), W1, 6, 7, 1), w.done((r, "s", 1, 2), 1, 8))
    late = await w.put(StepWaiting(r, "s", 1, 2, 1, (sleep(),), W1[0], W1[1], at=at(9)))

    async with Projector(nc, dsn, tenant, batch_size=3) as live:
        await live.wait_for_seq(late, timeout_s=WAIT_S)
    tables = await dump_tables(conn)
    reasons = {row[1]: row[3] for row in tables["rejections"]}
    assert sorted(reasons) == sorted(rejected), reasons
    for seq, words in rejected.items():
        assert words in reasons[seq], (seq, reasons[seq])
    step = the_step(await get_run(conn, r, tenant=tenant))
    assert (step["status"], step["waiting_for"]) == ("SUCCEEDED", None)
    assert [(x["index"], x["woken_at"], x["condition"]) for x in step["waits"]] == [(0, at(4), 0)]
    assert attempts(step) == [(1, 1, "SUSPENDED", None, at(2)), (1, 2, "SUCCEEDED", at(6), at(7))]


async def test_replay_verify_of_waits_finds_no_difference(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    async with Projector(nc, dsn, tenant, batch_size=2) as live:
        await durable_run(w)
        await live.wait_caught_up(timeout_s=WAIT_S)
        await durable_run(w, t=20)  # live tailing meanwhile
        await live.wait_caught_up(timeout_s=WAIT_S)
    assert len((await dump_tables(conn))["step_waits"]) == 4
    connect = psycopg.AsyncConnection.connect
    async with await connect(dsn, autocommit=True) as live_db, await connect(dsn) as work:
        report = await replay(live_db, work, {tenant: nc}, "verified")
    assert report.differences == [] and report.rows > 0


async def test_runs_get_audit_and_as_of_show_the_waits(
    nats_server: NatsServer, nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r, marks = await durable_run(w)
    records = await read_all(nc, tenant)
    await migrate(conn)
    await apply_records(conn, tenant, upto(records, marks["waiting2"]))
    await conn.commit()

    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant)
    assert f"  s                    WAITING   attempts=2\n    waiting for {SECOND_WAIT}\n" in out
    assert (
        f"    wait 0 (attempt 1, delivery 1) at {at(2)}: {FIRST_WAIT};"
        f" woken at {at(3)} by condition 0 (sleep)\n"
    ) in out
    assert f"    wait 1 (attempt 1, delivery 2) at {at(5)}: {SECOND_WAIT}; still waiting\n" in out

    # --as-of folds the log: the same step, as it was at each point.
    as_of = f"--as-of={marks['woken']}"
    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant, as_of)
    assert f"  s                    WAITING   attempts=1\n    waiting for {FIRST_WAIT}\n" in out
    assert "by condition 0 (sleep)\n" in out
    view = as_of_view(tenant, r, records, seq=marks["waiting2"])
    (step,) = view["steps"]
    assert (step["status"], step["waiting_for"]) == ("WAITING", SECOND_WAIT)
    assert [a["status"] for a in step["attempts"]] == ["SUSPENDED", "SUSPENDED"]
    assert [(x["wait_index"], x["kind"], x["conditions"][0]) for x in step["waits"]] == [
        (0, "sleep", {"kind": "sleep", "until": SLEEP_UNTIL}),
        (1, None, {"kind": "event", "event_key": "user:confirmed", "expression": SAME_USER}),
    ]
    # Folding the whole log, as of its end, is the read model the projector writes.
    await apply_records(conn, tenant, records)
    await conn.commit()
    done = as_of_view(tenant, r, records, seq=marks["end"])
    assert [s["status"] for s in done["steps"]] == ["SUCCEEDED"]
    assert len(done["steps"][0]["waits"]) == 2
    # natchet replay --verify: the log rebuilt into a fresh schema is the live projection.
    report = json.loads(await natchet(nats_server.url, dsn, "replay", "--verify", "--json"))
    assert report["verified"] and report["differences"] == [] and report["rows_compared"], report

    # The audit, read from the log: who waited, for what, and what woke each wait.
    mine = [(rec, m) for rec in records if getattr(m := decoded(rec), "run_id", None) == r]
    lines, _attempts = entries(mine)
    said = [(e["kind"], e["actor"]["role"], e["delivery"], e["summary"]) for e in lines]
    assert ("waiting", "worker", 1, f"wait 0: waiting for {FIRST_WAIT}; slot given back") in said
    assert (
        "woken",
        "dispatcher",
        None,
        "wait 0 woken by its condition 0: the sleep came due",
    ) in said
    assert (
        "woken", "dispatcher", None,
        'wait 1 woken by its condition 0: event 7 (user:confirmed), payload {"user_id":42}',
    ) in said  # fmt: skip
    assert (
        "task", "dispatcher", None,
        "task offered again to single's workers after 2 wait(s) woken, deliveries counted from 3",
    ) in said  # fmt: skip
    # A run whose step waited at once (no assigned) is running, as the read model says.
    until_wait = [(rec, m) for rec, m in mine if rec.seq <= marks["waiting"]]
    assert run_summary(r, schemas.Scope(tenant), until_wait)["status"] == "RUNNING"
    waiting = next(e for e in lines if e["kind"] == "waiting")
    assert waiting["actor"] == {"role": "worker", "id": W1[0], "name": W1[1]}
    out = await natchet(nats_server.url, dsn, "audit", r, "--tenant", tenant)
    assert f"wait 1: waiting for {SECOND_WAIT}; slot given back" in out
    assert "wait 1 woken by its condition 0: event 7 (user:confirmed)" in out
    assert "task offered again to single's workers after 1 wait(s) woken" in out
