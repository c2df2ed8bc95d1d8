"""The read model's layout version: a database of an older layout (schema_v1.sql, the first;
schema_v2.sql, runs keyed by id alone; schema_v4.sql, before the run list's indexes) is
dropped and rebuilt from the log, once, with the indexes of a fresh one; a current one is
left alone; a newer one is refused."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS
from projector_scenario import at, read_all, write_history
from psycopg import sql

import projector
import schemas
from projector import Projector, apply_records, dump_tables, get_run, list_runs, migrate
from projector.migrations import SCHEMA_VERSION, SchemaVersionError, set_search_path

WAIT_S = 30.0
Conn = psycopg.AsyncConnection[Any]
OLD_LAYOUTS = {1: "schema_v1.sql", 2: "schema_v2.sql", 4: "schema_v4.sql"}


async def create_old(conn: Conn, schema: str, version: int) -> None:
    old = (Path(__file__).parent / OLD_LAYOUTS[version]).read_text("utf-8")
    async with conn.transaction():
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await set_search_path(conn, schema)
        await conn.execute(old.encode())


async def recorded_version(conn: Conn, schema: str) -> int:
    async with conn.transaction():
        await set_search_path(conn, schema)
        cur = await conn.execute("SELECT version FROM projector_schema_version")
        rows = await cur.fetchall()
    assert len(rows) == 1
    return int(rows[0][0])


async def index_definitions(conn: Conn, schema: str) -> dict[str, str]:
    """Every index of ``schema``'s tables by name, its definition without the schema name."""
    cur = await conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
    )
    return {name: d.replace(f"{schema}.", "") for name, d in await cur.fetchall()}


def rebuilds(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "projector.migrations"]


@pytest.mark.parametrize("version", sorted(OLD_LAYOUTS))
async def test_an_old_database_is_dropped_and_rebuilt_from_the_log(
    version: int,
    nc: NATS,
    tenant: str,
    dsn: str,
    conn: Conn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="projector.migrations")
    history = await write_history(nc, tenant)
    squatter = "someone-else"
    await create_old(conn, "old", version)
    async with conn.transaction():
        await set_search_path(conn, "old")
        # Another tenant's row on the diamond's id (what the old keys let happen), and a
        # checkpoint saying the whole stream is projected: kept, they would hide the run.
        await conn.execute(
            "INSERT INTO runs (id, tenant, namespace, workflow, status, created_at, last_seq)"
            " VALUES (%s, %s, 'default', 'single', 'QUEUED', %s, 1)",
            (history.diamond.run_id, squatter, at(0)),
        )
        keyed = "tenant, " if version >= 3 else ""  # steps keyed by tenant since layout 3
        await conn.execute(
            f"INSERT INTO steps ({keyed}run_id, name, parents, status, last_seq)"
            f" VALUES ({'%s, ' if keyed else ''}%s, 's', '{{}}', 'PENDING', 1)",
            (squatter, history.diamond.run_id) if keyed else (history.diamond.run_id,),
        )
        await conn.execute(
            "INSERT INTO projector_checkpoints (stream, last_seq) VALUES (%s, %s)",
            (schemas.stream_name(tenant), history.last_seq),
        )

    async with Projector(nc, dsn, tenant, schema="old") as p:
        await p.wait_for_seq(history.last_seq, timeout_s=WAIT_S)
    [line] = rebuilds(caplog)
    assert "'old'" in line and f"needs {SCHEMA_VERSION}" in line and "rebuild" in line
    assert await recorded_version(conn, "old") == SCHEMA_VERSION

    fresh = "fresh"
    await migrate(conn, fresh)
    await apply_records(conn, tenant, await read_all(nc, tenant), schema=fresh)
    rebuilt = await dump_tables(conn, "old")
    assert rebuilt == await dump_tables(conn, fresh)
    assert len(rebuilt["runs"]) == 8
    diamond = await get_run(conn, history.diamond.run_id, tenant=tenant, schema="old")
    assert diamond is not None and diamond["workflow"] == "diamond"
    assert await list_runs(conn, tenant=squatter, schema="old") == []

    assert await index_definitions(conn, "old") == await index_definitions(conn, fresh)

    # Migrating again (a projector restarting) drops nothing.
    await migrate(conn, "old")
    assert await dump_tables(conn, "old") == rebuilt
    assert len(rebuilds(caplog)) == 1


async def test_a_fresh_schema_records_its_version_and_is_kept(
    conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projector.migrations")
    await migrate(conn, "x")
    assert await recorded_version(conn, "x") == SCHEMA_VERSION
    indexes = await index_definitions(conn, "x")
    assert {"runs_list_tenant", "runs_list_status", "runs_id_prefix", "runs_event"} <= set(indexes)
    async with conn.transaction():
        await conn.execute("INSERT INTO x.projector_checkpoints VALUES ('s', 5)")
    await migrate(conn, "x")
    assert await index_definitions(conn, "x") == indexes
    assert (await dump_tables(conn, "x"))["projector_checkpoints"] == [("s", 5)]
    assert await recorded_version(conn, "x") == SCHEMA_VERSION
    assert rebuilds(caplog) == []


async def test_a_newer_schema_is_refused_and_left_alone(conn: Conn) -> None:
    await migrate(conn, "x")
    async with conn.transaction():
        await conn.execute("INSERT INTO x.projector_checkpoints VALUES ('s', 5)")
        await conn.execute("UPDATE x.projector_schema_version SET version = version + 1")
    with pytest.raises(SchemaVersionError, match="newer"):
        await migrate(conn, "x")
    assert (await dump_tables(conn, "x"))["projector_checkpoints"] == [("s", 5)]
    assert await recorded_version(conn, "x") == SCHEMA_VERSION + 1


async def test_concurrent_migrations_of_an_old_database_drop_it_once(
    dsn: str, conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projector.migrations")
    await create_old(conn, "old", 2)
    async with conn.transaction():
        await conn.execute("INSERT INTO old.projector_checkpoints VALUES ('s', 5)")
    async with (
        await psycopg.AsyncConnection.connect(dsn) as c1,
        await psycopg.AsyncConnection.connect(dsn) as c2,
    ):
        await asyncio.gather(migrate(c1, "old"), migrate(c2, "old"), migrate(conn, "old"))
    assert len(rebuilds(caplog)) == 1
    tables = await dump_tables(conn, "old")
    assert set(tables) == set(projector.TABLES)
    assert all(rows == [] for rows in tables.values())
    assert await recorded_version(conn, "old") == SCHEMA_VERSION
