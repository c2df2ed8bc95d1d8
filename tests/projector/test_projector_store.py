"""The store's statements: plans that stay right on fresh tables, values that come back as
they went in, and projectors of one tenant at once that lose no update."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from test_projector_batch import TENANT, realistic_batch

from projector import _values as v
from projector import apply_records, dump_tables, migrate, store
from projector.migrations import set_search_path

Conn = psycopg.AsyncConnection[Any]
LOADS = {
    "runs": store.LOAD_RUNS,
    "steps": store.LOAD_STEPS,
    "attempts": store.LOAD_ATTEMPTS,
    "step_waits": store.LOAD_WAITS,
}


def scans(plan: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """(index, index condition) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    scan = "Scan" in plan["Node Type"]
    out = [(plan.get("Index Name"), plan.get("Index Cond"))] if scan else []
    for child in plan.get("Plans", []):
        out += scans(child)
    return out


async def test_loads_pick_the_primary_key_on_fresh_tables(conn: Conn) -> None:
    """Tables never analyzed, filled with one tenant's runs: every load looks rows up by
    primary key instead of scanning the tenant's runs.

    The plan checked is the one the projector gets: its loads are never prepared
    (``prepare=False``: an unnamed statement, planned with the values bound). A generic plan
    (prepared, made while the tables were empty) is not checked since layout 6: with runs
    rows that wide, Postgres's generic plan on a never-analyzed table scans the tenant's
    runs on any index led by ``tenant``, whatever the query's shape (``= ANY`` or a join to
    the ids). Preparing the loads would need analyzed tables first."""
    await migrate(conn, "fresh")
    await conn.commit()
    async with conn.transaction():
        await set_search_path(conn, "fresh")
        await conn.execute(
            "INSERT INTO runs (id, tenant, namespace, workflow, status, created_at, last_seq)"
            " SELECT 'r' || i, 't', 'default', 'wf', 'SUCCEEDED', now(), i"
            " FROM generate_series(1, 20000) i"
        )
        for table, child in (("steps", "name, parents"), ("attempts", "step, attempt, delivery")):
            values = "'a', '{{}}'" if table == "steps" else "'a', 1, 1"
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (tenant, run_id, " + child + ", status, last_seq)"
                    " SELECT 't', 'r' || i, " + values + ", 'SUCCEEDED', i"
                    " FROM generate_series(1, 20000) i"
                ).format(sql.Identifier(table))
            )
        await conn.execute(
            "INSERT INTO step_waits (tenant, run_id, step, attempt, wait_index, delivery,"
            " conditions, waiting_for, worker_id, worker_name, waited_at, last_seq)"
            " SELECT 't', 'r' || i, 'a', 1, 0, 1, '[]', 'x', 'w', 'n', now(), i"
            " FROM generate_series(1, 20000) i"
        )
        for table, load in LOADS.items():
            query = sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(
                load.replace("%(tenant)s", "'t'").replace("%(ids)s", "'{r5,r7}'")
            )
            cur = await conn.execute(query)
            row = await cur.fetchone()
            assert row is not None
            # The primary key, searched by tenant and run id: not every run of the tenant.
            found = scans(row[0][0]["Plan"])
            assert found, table
            for index, cond in found:
                assert index == f"{table}_pkey" and "id = ANY" in (cond or ""), found


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.text().map(lambda s: v.text(s, "x")), max_size=6))
async def test_text_arrays_come_back_as_they_went(conn: Conn, values: list[str]) -> None:
    nasty = ["", "NULL", "null", "a,b", '"', "\\", '\\"', "{}", "{a}", " x ", "\t\n", "é€😀"]
    for case in (values, nasty):
        cur = await conn.execute("SELECT %s::text::text[]", (v.text_array(case),))
        row = await cur.fetchone()
        assert row is not None and row[0] == case
    await conn.rollback()


async def test_projectors_of_one_tenant_at_once(dsn: str, conn: Conn) -> None:
    """Several projectors of one tenant and schema (a standby taking over while the old one
    still runs), each applying the log in order in batches of its own size, at once: the
    projection is the one a single projector makes."""
    records = await realistic_batch(seed=5)
    await migrate(conn, "alone")
    await apply_records(conn, TENANT, records, schema="alone")
    expected = await dump_tables(conn, "alone")

    schema = f"c_{uuid.uuid4().hex[:8]}"
    await migrate(conn, schema)
    await conn.commit()
    conns = [await psycopg.AsyncConnection.connect(dsn) for _ in range(4)]
    try:

        async def feed(c: Conn, size: int) -> None:
            for i in range(0, len(records), size):
                await apply_records(c, TENANT, records[i : i + size], schema=schema)

        await asyncio.gather(
            *(feed(c, size) for c, size in zip(conns, (7, 50, 150, 500), strict=True))
        )
    finally:
        for c in conns:
            await c.close()
    assert await dump_tables(conn, schema) == expected
