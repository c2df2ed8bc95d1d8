"""A run's priority in the read model (issue 15): a ``created`` with a priority gives its
run that priority (runs get shows it, a rebuild gives the same rows); a priority outside
1..3 is a rejection naming it; a run without one has none (NULL)."""

from __future__ import annotations

from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import SINGLE_STEPS, Writer, at

import eventstore
import schemas
from eventstore import Append
from natchet.dev.embedded import NatsServer
from projector import Projector, dump_tables, get_run
from projector.replay import replay
from schemas import RunCreated, WorkflowDef
from tests.support import natchet_cli as natchet

WAIT_S = 30.0


def created(r: str, priority: int | None) -> RunCreated:
    return RunCreated(r, "single", "v1", {}, SINGLE_STEPS, created_at=at(0), priority=priority)


async def test_priorities_fold_a_bad_one_is_rejected_and_a_rebuild_agrees(
    nats_server: NatsServer, nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)
    await w.put(WorkflowDef(name="single", version="v1", steps=SINGLE_STEPS, registered_at=at(0)))
    await w.put(created("r-high", 3), created("r-none", None))
    bad = schemas.encode(created("r-bad", 2)).replace(b'"priority":2', b'"priority":7')
    rejected = await eventstore.append(nc, Append(scope.run("r-bad", "created"), bad))
    last = await w.put(created("r-low", 1))

    async with Projector(nc, dsn, tenant, batch_size=2) as live:
        await live.wait_for_seq(last, timeout_s=WAIT_S)
    got = {r: await get_run(conn, r, tenant=tenant) for r in ("r-high", "r-none", "r-low")}
    assert {r: run["priority"] for r, run in got.items() if run} == {
        "r-high": 3, "r-none": None, "r-low": 1,
    }  # fmt: skip
    assert await get_run(conn, "r-bad", tenant=tenant) is None
    reasons = {row[1]: row[3] for row in (await dump_tables(conn))["rejections"]}
    assert "priority must be 1 (low), 2 (medium) or 3 (high), not 7" in reasons[rejected]

    out = await natchet(nats_server.url, dsn, "runs", "get", "r-high", "--tenant", tenant)
    assert "  priority: 3\n" in out, out
    out = await natchet(nats_server.url, dsn, "runs", "get", "r-none", "--tenant", tenant)
    assert "priority" not in out, out

    connect = psycopg.AsyncConnection.connect
    async with await connect(dsn, autocommit=True) as live_db, await connect(dsn) as work:
        report = await replay(live_db, work, {tenant: nc}, "verified")
    assert report.differences == [] and report.rows > 0
