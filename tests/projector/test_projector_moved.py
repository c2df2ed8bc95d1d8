"""Moved tasks in the read model (``dispatcher.moved``): a step whose worker went is queued
again in its attempt, the gone worker's delivery LOST; a moved task held (HARD sticky)
says why; ``runs get``, ``--as-of``, the audit and a rebuild agree."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import W1, W2, Writer, at, read_all, single_workflow

import schemas
from eventstore import Append
from natchet.audit import as_of as as_of_view
from natchet.audit import decoded, entries
from natchet.dev.embedded import NatsServer
from projector import apply_records, get_run, migrate
from projector.ops import MOVED
from schemas import RunFinished, RunStatus, Task, encode
from schemas.holds import HoldKind, StepHeld
from tests.support import natchet_cli as natchet

GONE = "worker w-1, which the run's first step went to, is gone (sticky HARD)"


def task(w: Writer, r: str, t: float, worker: str, **kw: Any) -> Append:
    """The step's task, placed on ``worker`` (its directed subject)."""
    placed = Task(r, "single", "s", 1, {"n": 1}, {}, 60.0, queued_at=at(t), worker_id=worker, **kw)
    return Append(w.scope.directed_task(worker, "single", "s"), encode(placed))


async def test_a_moved_step_is_queued_again_in_its_attempt_and_its_old_delivery_lost(
    nats_server: NatsServer, nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r = str(uuid.uuid4())
    await w.created(r, 0, single=True)
    await w.put(task(w, r, 1, W1[0]))
    running = await w.put(w.assign((r, "s", 1, 1), W1, 2))
    moved = await w.put(task(w, r, 9, W2[0], delivery_offset=1, moves=1, moved_from=W1[0]))
    await w.put(w.carried((r, "s", 1, 2), W2, 10, 11, {"ok": True}))
    await w.put(
        w.done((r, "s", 1, 2), {"ok": True}, 12), RunFinished(r, RunStatus.SUCCEEDED, at=at(12))
    )
    records = await read_all(nc, tenant)
    await migrate(conn)

    await apply_records(conn, tenant, [rec for rec in records if rec.seq <= moved])
    await conn.commit()
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None and run["status"] == "RUNNING"
    (step,) = run["steps"]
    assert (step["status"], step["queued_at"]) == ("QUEUED", at(1))
    (lost,) = step["attempts"]
    assert (lost["delivery"], lost["status"], lost["error"]) == (1, "LOST", MOVED)
    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant)
    assert "  s                    QUEUED" in out, out

    view = as_of_view(tenant, r, records, seq=running)
    assert [s["status"] for s in view["steps"]] == ["RUNNING"]
    view = as_of_view(tenant, r, records, seq=moved)
    assert [s["status"] for s in view["steps"]] == ["QUEUED"]
    assert [a["status"] for a in view["steps"][0]["attempts"]] == ["LOST"]

    await apply_records(conn, tenant, records)
    await conn.commit()
    run = await get_run(conn, r, tenant=tenant)
    assert run is not None and run["status"] == "SUCCEEDED"
    (step,) = run["steps"]
    assert [(a["delivery"], a["status"]) for a in step["attempts"]] == [
        (1, "LOST"),
        (2, "SUCCEEDED"),
    ]
    report = json.loads(await natchet(nats_server.url, dsn, "replay", "--verify", "--json"))
    assert report["verified"] and report["differences"] == [], report

    mine = [(rec, m) for rec in records if getattr(m := decoded(rec), "run_id", None) == r]
    lines, attempts = entries(mine)
    said = [e["summary"] for e in lines if e["kind"] == "task"]
    assert any(f"moved off worker {W1[0]}" in s and f"worker {W2[0]}" in s for s in said), said
    assert attempts.rows[("s", 1, 1)]["status"] == "LOST"


async def test_a_moved_step_held_sticky_hard_says_which_worker_went(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(single_workflow())
    r = str(uuid.uuid4())
    await w.created(r, 0, single=True)
    await w.put(task(w, r, 1, W1[0]))
    await w.put(w.assign((r, "s", 1, 1), W1, 2))
    await w.put(StepHeld(r, "s", 1, HoldKind.STICKY, GONE, at=at(9), moves=1, moved_from=W1[0]))
    await migrate(conn)
    await apply_records(conn, tenant, await read_all(nc, tenant))
    (step,) = (await get_run(conn, r, tenant=tenant) or {})["steps"]
    assert (step["status"], step["waiting_for"]) == ("QUEUED", GONE)
    assert [a["status"] for a in step["attempts"]] == ["LOST"]
