"""The Projector service on a real stream: it tails into Postgres, restarts from its
checkpoint, and rides out lost Postgres connections and a Postgres restart."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS
from projector_scenario import Writer, expected_run, read_all, workflow, write_history

import eventstore
import schemas
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from projector import Projector, apply_records, dump_tables, get_run, migrate

WAIT_S = 30.0


async def fresh_projection(conn: psycopg.AsyncConnection[Any], nc: NATS, tenant: str) -> Any:
    """The tables a projection of the whole stream must hold, built by apply_records."""
    schema = f"check_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    await apply_records(conn, tenant, await read_all(nc, tenant), schema=schema)
    return await dump_tables(conn, schema)


async def test_tails_restarts_and_doubles_nothing(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    history = await write_history(nc, tenant)
    diamond = history.diamond
    async with Projector(nc, dsn, tenant) as p:
        seq = await p.wait_caught_up(timeout_s=WAIT_S)
        assert seq == history.last_seq
        assert p.last_applied == seq
        assert await get_run(conn, diamond.run_id, tenant=tenant) == expected_run(diamond, tenant)
        # Tailing: what is appended now shows up.
        second = await Writer(nc, schemas.Scope(tenant)).diamond(t=100)
        await p.wait_for_seq(second.last_seq, timeout_s=WAIT_S)
        assert await get_run(conn, second.run_id, tenant=tenant) == expected_run(second, tenant)

    third = await Writer(nc, schemas.Scope(tenant)).diamond(t=200)  # while no projector runs
    async with Projector(nc, dsn, tenant, batch_size=3) as p2:
        await p2.wait_for_seq(third.last_seq, timeout_s=WAIT_S)
        assert await get_run(conn, third.run_id, tenant=tenant) == expected_run(third, tenant)

    tables = await dump_tables(conn)
    assert tables == await fresh_projection(conn, nc, tenant)
    assert tables["projector_checkpoints"] == [(schemas.stream_name(tenant), third.last_seq)]
    # The history's 8 runs and 2 more diamonds; the reliability runs log 2 lines and make
    # 14 attempts (retry 3, handed back 2, lost 2, cancel 1, on-failure 2, fast steps 4).
    assert len(tables["runs"]) == 10
    assert len(tables["step_logs"]) == 3 * 3 + 2
    assert len(tables["attempts"]) == 3 * 6 + 14


async def test_wait_for_seq_times_out(nc: NATS, tenant: str, dsn: str) -> None:
    async with Projector(nc, dsn, tenant) as p:
        with pytest.raises(TimeoutError):
            await p.wait_for_seq(1, timeout_s=0.3)


async def test_shutdown_is_idempotent_and_run_can_be_awaited(
    nc: NATS, tenant: str, dsn: str
) -> None:
    p = Projector(nc, dsn, tenant)
    await p.shutdown()
    await p.run()  # already shut down: returns at once
    p2 = Projector(nc, dsn, tenant)
    task = p2.start()
    await p2.wait_caught_up(timeout_s=WAIT_S)
    await p2.shutdown()
    await p2.shutdown()
    assert task.done()


async def test_survives_lost_postgres_connections(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    writer = Writer(nc, schemas.Scope(tenant))
    await writer.put(workflow())
    async with Projector(nc, dsn, tenant, backoff_base_s=0.01) as p:
        first = await writer.diamond()
        await p.wait_for_seq(first.last_seq, timeout_s=WAIT_S)
        for n in range(3):
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (f"natchet-projector-{tenant}",),
                )
            later = await writer.diamond(t=100 * (n + 1))
            await p.wait_for_seq(later.last_seq, timeout_s=WAIT_S)
            assert await get_run(conn, later.run_id, tenant=tenant) == expected_run(later, tenant)
    assert await dump_tables(conn) == await fresh_projection(conn, nc, tenant)


def start_quietly(server: EmbeddedPostgres) -> None:
    with warnings.catch_warnings():
        # EmbeddedPostgres.start leaves its log file object to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        server.start()


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, to stop and start."""
    server = EmbeddedPostgres(tmp_path / "pg")
    start_quietly(server)
    try:
        yield server
    finally:
        server.stop()


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.fault
async def test_survives_a_postgres_restart(
    nc: NATS, tenant: str, own_pg: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = own_pg.url()
    writer = Writer(nc, schemas.Scope(tenant))
    await writer.put(workflow())
    async with Projector(nc, dsn, tenant, backoff_base_s=0.05, backoff_max_s=0.2) as p:
        first = await writer.diamond()
        await p.wait_for_seq(first.last_seq, timeout_s=WAIT_S)
        await asyncio.to_thread(own_pg.stop)
        second = await writer.diamond(t=100)  # appended while Postgres is down
        # Down long enough for several failed reconnects.
        await eventually(lambda: len(caplog.records) >= 4)
        assert p.last_applied == first.last_seq
        await asyncio.to_thread(start_quietly, own_pg)
        await p.wait_for_seq(second.last_seq, timeout_s=WAIT_S)
        assert p.last_applied == await eventstore.last_seq(nc, tenant)
    assert all(r.levelname == "WARNING" for r in caplog.records)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert await get_run(conn, second.run_id, tenant=tenant) == expected_run(second, tenant)
        assert await dump_tables(conn) == await fresh_projection(conn, nc, tenant)


async def test_survives_losing_its_consumer(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    writer = Writer(nc, schemas.Scope(tenant))
    await writer.put(workflow())
    js = nc.jetstream()
    stream = schemas.stream_name(tenant)
    async with Projector(nc, dsn, tenant, backoff_base_s=0.01) as p:
        first = await writer.diamond()
        await p.wait_for_seq(first.last_seq, timeout_s=WAIT_S)
        for info in await js.consumers_info(stream):
            await js.delete_consumer(stream, info.name)
        later = await writer.diamond(t=100)
        await p.wait_for_seq(later.last_seq, timeout_s=WAIT_S)
    assert await dump_tables(conn) == await fresh_projection(conn, nc, tenant)


@pytest.mark.fault
async def test_survives_a_nats_restart(
    tmp_path: Path, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await eventstore.connect(eventstore.NatsOptions(server.url, name="restart"))
    try:
        tenant = "restart"
        await eventstore.ensure_tenant_stream(nc, tenant)
        writer = Writer(nc, schemas.Scope(tenant))
        await writer.put(workflow())
        async with Projector(nc, dsn, tenant, backoff_base_s=0.05, backoff_max_s=0.2) as p:
            first = await writer.diamond()
            await p.wait_for_seq(first.last_seq, timeout_s=WAIT_S)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            await eventually(lambda: nc.is_connected)
            later = await writer.diamond(t=100)
            await p.wait_for_seq(later.last_seq, timeout_s=WAIT_S)
        assert await dump_tables(conn) == await fresh_projection(conn, nc, tenant)
    finally:
        await nc.close()
        server.stop()
