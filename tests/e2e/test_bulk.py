"""Issue 14: ``event.bulk_push`` and ``admin.run_workflows`` append hundreds of items,
pipelined, all landing in the order given; a bad item is named by its index and the others
still land (not all-or-nothing)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

from eventstore import replay
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope, encode
from schemas.messages import StepDef, WorkflowDef
from tests.conftest import eventually
from tests.support import hatchet_for
from worker import BulkError

N = 500


async def count(db: psycopg.AsyncConnection[Any], query: str, *params: Any) -> int:
    cur = await db.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_bulk_push_lands_every_event_in_order_and_names_a_bad_one(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    items = [
        {"key": "bulk:go", "payload": {"i": i}, "additional_metadata": {"batch": "b1"}}
        for i in range(N)
    ]
    pushed = await hatchet.event.aio_bulk_push(items)
    assert [p.key for p in pushed] == ["bulk:go"] * N
    seqs = [int(p.event_id) for p in pushed]
    assert seqs == sorted(seqs) and len(set(seqs)) == N

    async def all_projected() -> bool:
        n = "SELECT count(*) FROM events WHERE tenant = %s AND key = 'bulk:go'"
        return await count(db, n, tenant_name) == N

    await eventually(all_projected, timeout_s=60)
    cur = await db.execute(
        "SELECT (payload->>'i')::int, additional_metadata FROM events"
        " WHERE tenant = %s AND key = 'bulk:go' ORDER BY seq",
        (tenant_name,),
    )
    rows = await cur.fetchall()
    assert [i for i, _m in rows] == list(range(N))
    assert all(m == {"batch": "b1"} for _i, m in rows)

    mixed: list[Any] = [{"key": "bulk:more", "payload": {"i": i}} for i in range(10)]
    mixed[3] = {"key": "bad key!", "payload": {}}
    mixed[7] = {"key": "bulk:more", "payload": {1, 2}}  # a set: not JSON
    with pytest.raises(BulkError) as caught:
        await hatchet.event.aio_bulk_push(mixed)
    error = caught.value
    assert sorted(error.failures) == [3, 7]
    assert "item 3:" in str(error) and "item 7:" in str(error)
    assert [r is None for r in error.results] == [i in (3, 7) for i in range(10)]

    async def the_others_landed() -> bool:
        n = "SELECT count(*) FROM events WHERE tenant = %s AND key = 'bulk:more'"
        return await count(db, n, tenant_name) == 8

    await eventually(the_others_landed, timeout_s=30)
    hatchet.close()


async def test_run_workflows_requests_every_run_in_order_and_names_a_bad_one(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    nc: NATS,
) -> None:
    scope = Scope(tenant_name)
    # Registered, with no worker: its runs are created and wait in the queue.
    wf = WorkflowDef(name="Bulk", version="1", steps=[StepDef("only")])
    await nc.request(scope.workflow("Bulk"), encode(wf), timeout=5)
    hatchet = hatchet_for(nats_server, tenant_name)
    items = [
        {"workflow_name": "Bulk", "input": {"i": i}, "options": {"additional_metadata": {"i": i}}}
        for i in range(N)
    ]
    refs = await hatchet.admin.aio_run_workflows(items)
    ids = [r.workflow_run_id for r in refs]
    assert len(set(ids)) == N
    logged = [
        rec.subject.split(".")[3]
        async for rec in replay(nc, tenant_name, [f"{tenant_name}.default.runs.*.requested"])
    ]
    assert logged == ids  # the log holds them in the order given

    async def all_created() -> bool:
        n = "SELECT count(*) FROM runs WHERE tenant = %s AND workflow = 'Bulk' AND status = %s"
        return await count(db, n, tenant_name, "QUEUED") == N

    await eventually(all_created, timeout_s=60)
    cur = await db.execute(
        "SELECT additional_metadata->>'i', input->>'i' FROM runs WHERE tenant = %s AND id = %s",
        (tenant_name, ids[123]),
    )
    assert await cur.fetchone() == ("123", "123")

    mixed: list[Any] = [{"workflow_name": "Bulk", "input": {"i": i}} for i in range(5)]
    mixed[2] = {"workflow_name": "no such/name", "input": {}}
    mixed[4] = {"workflow_name": "Bulk", "input": {}, "options": {"priority": 7}}
    with pytest.raises(BulkError) as caught:
        await hatchet.admin.aio_run_workflows(mixed)
    assert sorted(caught.value.failures) == [2, 4]
    assert "priority" in caught.value.failures[4]
    landed = [r.workflow_run_id for r in caught.value.results if r is not None]
    assert len(landed) == 3

    async def the_others_created() -> bool:
        n = "SELECT count(*) FROM runs WHERE tenant = %s AND id = ANY(%s)"
        return await count(db, n, tenant_name, landed) == 3

    await eventually(the_others_created, timeout_s=30)
    hatchet.close()
