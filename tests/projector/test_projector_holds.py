"""Held steps in the read model (flow control, ``runs.<id>.held``): the step is QUEUED and
says why it waits (``waiting_for``) until its task comes; ``runs get``, ``--as-of`` and the
audit show it; a rebuild gives the live tables."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import W1, Writer, at, read_all, single_workflow

import schemas
from natchet.audit import as_of as as_of_view
from natchet.audit import decoded, entries
from natchet.dev.embedded import NatsServer
from projector import apply_records, get_run, migrate
from schemas import RunFinished, RunStatus, Task
from schemas.holds import HoldKind, StepHeld
from tests.support import natchet_cli as natchet

WHY = "rate limit 'openai' allows 10 units per 1s; next room at 2025-01-02T03:00:05+00:00"
LABELS = "no live worker has the labels gpu=a100"


async def held_run(w: Writer) -> tuple[str, dict[str, int]]:
    """A run whose one step is held for a rate limit, then for labels, then offered."""
    r, marks = str(uuid.uuid4()), {}
    await w.created(r, 0, single=True)
    marks["held"] = await w.put(StepHeld(r, "s", 1, HoldKind.RATE_LIMIT, WHY, at=at(1)))
    marks["held2"] = await w.put(StepHeld(r, "s", 1, HoldKind.LABELS, LABELS, at=at(2)))
    task = Task(r, "single", "s", 1, {"n": 1}, {}, 60.0, queued_at=at(1))
    marks["task"] = await w.put(task)
    await w.put(w.carried((r, "s", 1, 1), W1, 4, 5, {"ok": True}))
    marks["end"] = await w.put(
        w.done((r, "s", 1, 1), {"ok": True}, 6), RunFinished(r, RunStatus.SUCCEEDED, at=at(6))
    )
    return r, marks


def upto(records: list[Any], seq: int) -> list[Any]:
    return [rec for rec in records if rec.seq <= seq]


async def test_a_held_step_is_queued_and_says_why_until_its_task_comes(
    nats_server: NatsServer, nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r, marks = await held_run(w)
    records = await read_all(nc, tenant)
    await migrate(conn)

    await apply_records(conn, tenant, upto(records, marks["held"]))
    await conn.commit()
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None and run["status"] == "QUEUED"
    (step,) = run["steps"]
    assert (step["status"], step["waiting_for"], step["queued_at"]) == ("QUEUED", WHY, at(1))
    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant)
    assert f"  s                    QUEUED    attempts=0\n    waiting for {WHY}\n" in out

    await apply_records(conn, tenant, upto(records, marks["held2"]))
    (step,) = (await get_run(conn, r, tenant=tenant) or {})["steps"]
    assert (step["status"], step["waiting_for"]) == ("QUEUED", LABELS)  # the latest reason

    await apply_records(conn, tenant, upto(records, marks["task"]))
    (step,) = (await get_run(conn, r, tenant=tenant) or {})["steps"]
    assert (step["status"], step["waiting_for"], step["queued_at"]) == ("QUEUED", None, at(1))

    # --as-of folds the log by the same rules.
    view = as_of_view(tenant, r, records, seq=marks["held"])
    assert [(s["status"], s["waiting_for"]) for s in view["steps"]] == [("QUEUED", WHY)]

    await apply_records(conn, tenant, records)
    await conn.commit()
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None and run["status"] == "SUCCEEDED"
    assert run["steps"][0]["waiting_for"] is None
    report = json.loads(await natchet(nats_server.url, dsn, "replay", "--verify", "--json"))
    assert report["verified"] and report["differences"] == [] and report["rows_compared"], report

    mine = [(rec, m) for rec in records if getattr(m := decoded(rec), "run_id", None) == r]
    lines, _attempts = entries(mine)
    said = [(e["kind"], e["actor"]["role"], e["step"], e["summary"]) for e in lines]
    assert ("held", "dispatcher", "s", f"held back (RATE_LIMIT): {WHY}") in said
    assert ("held", "dispatcher", "s", f"held back (LABELS): {LABELS}") in said


async def test_a_held_of_a_step_already_offered_or_over_changes_nothing(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r, _marks = await held_run(w)
    await w.put(StepHeld(r, "s", 1, HoldKind.STICKY, "late", at=at(7)))  # after the end
    await migrate(conn)
    await apply_records(conn, tenant, await read_all(nc, tenant))
    (step,) = (await get_run(conn, r, tenant=tenant) or {})["steps"]
    assert (step["status"], step["waiting_for"]) == ("SUCCEEDED", None)
