"""Rebuilding from the log into a fresh schema gives the same tables as the live projection
(the seam for ``natchet replay``)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS
from projector_scenario import Writer, read_all, read_breaking_after, write_history

import eventstore
import projector.rebuild
import schemas
from projector import Projector, apply_records, dump_tables, list_runs, migrate, read_checkpoint

WAIT_S = 30.0


async def test_rebuild_into_a_fresh_schema_is_identical(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    await write_history(nc, tenant)
    async with Projector(nc, dsn, tenant, batch_size=4) as live:
        await live.wait_caught_up(timeout_s=WAIT_S)
        # Live tailing interleaved with new appends, in small batches.
        await Writer(nc, schemas.Scope(tenant)).diamond(t=50)
        await live.wait_caught_up(timeout_s=WAIT_S)
    end = await eventstore.last_seq(nc, tenant)
    live_tables = await dump_tables(conn)
    assert live_tables["projector_checkpoints"] == [(schemas.stream_name(tenant), end)]

    # A second projector, rebuilding from scratch into its own schema.
    async with Projector(nc, dsn, tenant, schema="rebuild") as rebuild:
        await rebuild.wait_for_seq(end, timeout_s=WAIT_S)
    assert await dump_tables(conn, "rebuild") == live_tables
    assert await read_checkpoint(conn, tenant, "rebuild") == end

    # And the plain replay + apply_records path.
    await migrate(conn, "replayed")
    await apply_records(conn, tenant, await read_all(nc, tenant), schema="replayed")
    assert await dump_tables(conn, "replayed") == live_tables

    # Queries read any schema.
    assert await list_runs(conn, schema="rebuild") == await list_runs(conn)
    assert len(await list_runs(conn, schema="rebuild")) == 9


async def test_two_tenants_share_one_database(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    other = tenant[:-1] + ("x" if tenant[-1] != "x" else "y")
    await eventstore.ensure_tenant_stream(nc, other)
    await write_history(nc, tenant)
    await write_history(nc, other)
    async with Projector(nc, dsn, tenant) as p1, Projector(nc, dsn, other) as p2:
        await p1.wait_caught_up(timeout_s=WAIT_S)
        await p2.wait_caught_up(timeout_s=WAIT_S)
    assert len(await list_runs(conn, tenant=tenant)) == 8
    assert len(await list_runs(conn, tenant=other)) == 8
    assert len((await dump_tables(conn))["projector_checkpoints"]) == 2


async def test_rebuild_applies_whole_batches_and_gives_the_same_tables(
    nc: NATS,
    tenant: str,
    conn: psycopg.AsyncConnection[Any],
) -> None:
    """Every batch but the last holds ``batch_size`` records, and the tables are the ones
    applying the whole log at once gives."""
    await write_history(nc, tenant)
    records = await read_all(nc, tenant)
    await migrate(conn, "whole")
    await apply_records(conn, tenant, records, schema="whole")

    sizes: list[int] = []
    await migrate(conn, "batched")
    await projector.rebuild.rebuild(
        conn, nc, tenant, "batched", until_seq=records[-1].seq, batch_size=3,
        on_batch=sizes.append,
    )  # fmt: skip
    assert sum(sizes) == len(records) and set(sizes[:-1]) == {3} and 0 < sizes[-1] <= 3
    assert await dump_tables(conn, "batched") == await dump_tables(conn, "whole")


async def test_a_read_that_fails_fails_the_rebuild_with_its_error(
    nc: NATS,
    tenant: str,
    conn: psycopg.AsyncConnection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error reading the log (after some records were read) is the rebuild's error, and
    no reading task outlives it."""
    await write_history(nc, tenant)
    end = await eventstore.last_seq(nc, tenant)
    monkeypatch.setattr(projector.rebuild.eventstore, "read_to_end", read_breaking_after(5))
    await migrate(conn, "broken")
    with pytest.raises(eventstore.TransportError, match="went away"):
        await projector.rebuild.rebuild(conn, nc, tenant, "broken", until_seq=end, batch_size=3)
    # The rebuild's own task (other tests' leftovers on a shared loop are not its business).
    mine = [t for t in asyncio.all_tasks() if _named(t, "_read")]
    assert mine == []


async def test_a_write_that_fails_stops_the_reading(
    nc: NATS,
    tenant: str,
    conn: psycopg.AsyncConnection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Postgres refusing a batch midway is the rebuild's error, and the task reading ahead
    of it is stopped, not left reading."""
    await write_history(nc, tenant)
    end = await eventstore.last_seq(nc, tenant)
    batches = 0

    async def refuses(*args: Any, **kwargs: Any) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise psycopg.OperationalError("the server closed the connection")

    monkeypatch.setattr(projector.rebuild, "apply_planned", refuses)
    with pytest.raises(psycopg.OperationalError, match="closed"):
        await projector.rebuild.rebuild(conn, nc, tenant, "public", until_seq=end, batch_size=3)
    assert batches == 2
    mine = [t for t in asyncio.all_tasks() if _named(t, "_read")]
    assert mine == []


def _named(task: asyncio.Task[Any], name: str) -> bool:
    """Whether ``task`` runs the coroutine function ``name`` (a task may run another
    awaitable: the loop's closing of an async generator has no name)."""
    return getattr(task.get_coro(), "__name__", None) == name
