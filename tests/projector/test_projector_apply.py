"""apply_records: the diamond's rows match its messages, and feeding the same records
again (twice, reversed, shuffled, in any batches) changes nothing."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import expected_run, read_all, write_history

import projector
import schemas
from projector import apply_records, dump_tables, get_run, list_events, list_runs, migrate


async def test_rows_match_the_messages(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    history = await write_history(nc, tenant)
    diamond, rejected_id = history.diamond, history.rejected
    records = await read_all(nc, tenant)
    await migrate(conn)
    await apply_records(conn, tenant, records)

    assert await get_run(conn, diamond.run_id, tenant=tenant) == expected_run(diamond, tenant)
    rejected = await get_run(conn, rejected_id, tenant=tenant)
    assert rejected is not None
    assert rejected["status"] == "FAILED"
    assert rejected["error"] == "unknown workflow 'nope'"
    assert rejected["workflow"] == "nope"
    assert rejected["created_at"] == rejected["finished_at"]
    assert rejected["steps"] == []
    assert await get_run(conn, "no-such-run", tenant=tenant) is None

    runs = await list_runs(conn, tenant=tenant)
    assert [r["id"] for r in runs] == history.run_ids()  # newest first
    assert "steps" not in runs[0]
    assert [r["id"] for r in await list_runs(conn, status="FAILED")] == [
        history.on_failure.run_id,
        rejected_id,
    ]
    assert [r["id"] for r in await list_runs(conn, workflow="diamond")] == [diamond.run_id]
    assert await list_runs(conn, namespace="other") == []

    events = await list_events(conn, tenant=tenant)
    assert [(e["id"], e["key"], e["payload"], e["valid"]) for e in events] == [
        (str(diamond.event_seq), "order:created", {"order": 42}, True)
    ]
    tables = await dump_tables(conn)
    assert tables["projector_checkpoints"] == [(schemas.stream_name(tenant), records[-1].seq)]
    assert [(w[2], w[3], w[5]) for w in tables["workflows"]] == [
        ("diamond", "v1", ["order:created"]),
        ("flaky", "v1", []),
        ("single", "v1", []),
    ]
    assert tables["rejections"] == []


async def test_the_same_records_twice_change_nothing(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    await write_history(nc, tenant)
    records = await read_all(nc, tenant)
    await migrate(conn)
    await apply_records(conn, tenant, records)
    once = await dump_tables(conn)

    await apply_records(conn, tenant, records)
    assert await dump_tables(conn) == once
    await apply_records(conn, tenant, records[::-1])
    assert await dump_tables(conn) == once
    for seed in range(3):
        shuffled = records * 2
        random.Random(seed).shuffle(shuffled)
        for i in range(0, len(shuffled), 7):
            await apply_records(conn, tenant, shuffled[i : i + 7])
        assert await dump_tables(conn) == once


async def test_batch_boundaries_do_not_matter(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    await write_history(nc, tenant)
    records = await read_all(nc, tenant)
    await migrate(conn, "whole")
    await migrate(conn, "one_by_one")
    await apply_records(conn, tenant, records, schema="whole")
    for record in records:
        await apply_records(conn, tenant, [record], schema="one_by_one")
    assert await dump_tables(conn, "one_by_one") == await dump_tables(conn, "whole")


async def test_without_checkpoint_no_checkpoint_row(
    nc: NATS, tenant: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    await write_history(nc, tenant)
    await migrate(conn)
    await apply_records(conn, tenant, await read_all(nc, tenant), checkpoint=False)
    tables = await dump_tables(conn)
    assert tables["projector_checkpoints"] == []
    assert len(tables["runs"]) == 8


async def test_migrate_is_idempotent_and_safe_concurrently(dsn: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(dsn) as c1,
        await psycopg.AsyncConnection.connect(dsn) as c2,
    ):
        await asyncio.gather(migrate(c1, "x"), migrate(c2, "x"))
        await migrate(c1, "x")
        assert set((await dump_tables(c1, "x")).keys()) == set(projector.TABLES)
