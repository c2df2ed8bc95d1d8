"""Rebuilding the read model from the log into a fresh schema, and comparing it with the
live one (``natchet replay``).

The rebuild is the projector's own fold: each tenant's log, read from sequence 1 in order
(``eventstore.read_to_end``), through :func:`~projector.apply.apply_planned` into the new
schema (:func:`projector.rebuild.rebuild`), so it is exactly what the live projector
computes from the same messages.

The live projection lags the log, and keeps moving while a replay runs. So a replay covers
the same prefix of the log as the live projection: it rebuilds each tenant up to the live
checkpoint (``projector_checkpoints.last_seq``), then opens one snapshot of the live schema
(REPEATABLE READ), reads the checkpoints again in it, replays the few messages the live
projector applied meanwhile, and compares within that snapshot. Rows and checkpoints commit
together, so the snapshot holds exactly the fold of the log up to its checkpoints.

The comparison is table by table (a checksum over every row), and, for a table
whose checksum differs, row by row (a checksum per row): the rows that differ are read from
both sides and told column by column. Only the replayed tenants' rows are compared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import dict_row

import schemas
from eventstore import Connection
from projector import shares as shares_module
from projector import store
from projector.migrations import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    VERSION_TABLE,
    migrate,
)
from projector.rebuild import BATCH, rebuild
from schemas.errors import NatchetError

STREAM_PREFIX = schemas.stream_name("x")[:-1]  # "natchet-"
CHECKPOINTS = "projector_checkpoints"

# (messages replayed so far, messages to replay in all): called after every batch.
Progress = Callable[[int, int], None]


class ReplayError(NatchetError):
    """A replay that cannot be done or compared as asked (one line, said to the user)."""


@attrs.frozen
class Difference:
    """One way the live and the rebuilt projections differ: a column of a row (``column``),
    or a whole row present on one side only (``column`` is ``None``; the missing side's
    value is ``None``, the other's the row)."""

    table: str
    key: dict[str, Any]
    column: str | None
    live: Any
    rebuilt: Any

    def describe(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.key.items())
        if self.column is None:
            side = "live" if self.rebuilt is None else "rebuilt"
            return f"{self.table} ({where}): row only in the {side} projection"
        return (
            f"{self.table} ({where}) {self.column}:"
            f" live {show(self.live)}, rebuilt {show(self.rebuilt)}"
        )


@attrs.frozen
class Report:
    """What a replay rebuilt (``schema``, each tenant up to ``covered[tenant]``), how many
    rows it compared, and how they differ (empty: identical)."""

    schema: str
    covered: dict[str, int]
    rows: int
    differences: list[Difference]
    # Messages the live projector applied while the rebuild ran, replayed before comparing.
    caught_up: int = 0


def show(value: Any) -> str:
    """A column's value as a difference line shows it: text quoted, times in ISO-8601, JSON
    as JSON, NULL as NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return repr(value)


def tenant_of_stream(stream: str) -> str | None:
    return stream.removeprefix(STREAM_PREFIX) if stream.startswith(STREAM_PREFIX) else None


async def live_checkpoints(
    conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA
) -> dict[str, int]:
    """Each tenant the projection in ``schema`` holds, and its checkpoint (the last stream
    sequence applied), read in the caller's transaction if one is open."""
    query = sql.SQL("SELECT stream, last_seq FROM {}.{} ORDER BY stream").format(
        sql.Identifier(schema), sql.Identifier(CHECKPOINTS)
    )
    try:
        cur = await conn.execute(query)
    except psycopg.errors.UndefinedTable:
        raise ReplayError(
            f"schema {schema!r} holds no natchet projection (no {CHECKPOINTS} table)"
        ) from None
    out: dict[str, int] = {}
    for stream, last in await cur.fetchall():
        tenant = tenant_of_stream(stream)
        if tenant is not None:
            out[tenant] = int(last)
    return out


async def check_layout(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Refuse a live projection whose tables are of another layout than a rebuild's: they
    would differ in every row (the engine migrates it when it starts)."""
    query = sql.SQL("SELECT version FROM {}").format(sql.Identifier(schema, VERSION_TABLE))
    try:
        cur = await conn.execute(query)
    except psycopg.errors.UndefinedTable:
        raise ReplayError(f"schema {schema!r} holds no natchet projection") from None
    row = await cur.fetchone()
    found = None if row is None else int(row[0])
    if found != SCHEMA_VERSION:
        raise ReplayError(
            f"the live read model in {schema!r} has layout version {found}, this natchet"
            f" builds {SCHEMA_VERSION}: start the engine (it migrates) or upgrade natchet"
        )


async def schema_exists(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return await cur.fetchone() is not None


async def drop_schema(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextlib.asynccontextmanager
async def snapshot(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """One read-only REPEATABLE READ transaction on ``conn``: every read sees one state."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


async def replay(
    live: psycopg.AsyncConnection[Any],
    work: psycopg.AsyncConnection[Any],
    logs: Mapping[str, Connection],
    schema: str,
    *,
    live_schema: str = DEFAULT_SCHEMA,
    batch_size: int = BATCH,
    progress: Progress | None = None,
    compare: bool = True,
    shares: int | None = None,
) -> Report:
    """Rebuild the tenants of ``logs`` (each tenant's connection to its log) into the new
    ``schema`` through ``work`` up to the live checkpoints, and, with ``compare``, compare
    them with ``live_schema`` through ``live`` (module docstring). ``schema`` must not exist.
    ``shares``: the processes the bulk of each tenant's log is rebuilt in
    (:mod:`projector.shares`; ``None``: :func:`projector.shares.auto` chooses by its size)."""
    tenants = sorted(logs)
    if await schema_exists(work, schema):
        raise ReplayError(f"schema {schema!r} already exists: replay into a fresh one")
    await check_layout(live, live_schema)
    marks = await live_checkpoints(live, live_schema)
    covered = {t: 0 for t in tenants}
    total = sum(marks.get(t, 0) for t in tenants)
    done = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    async def catch_up(tenant: str, upto: int, shares: int = 1) -> None:
        if upto < covered[tenant]:
            raise ReplayError(
                f"the live projection of {tenant} went back from sequence {covered[tenant]}"
                f" to {upto} during the replay (was it rebuilt?): replay again"
            )
        await rebuild(
            work,
            logs[tenant],
            tenant,
            schema,
            start_seq=covered[tenant] + 1,
            until_seq=upto,
            batch_size=batch_size,
            on_batch=counted,
            shares=shares,
        )
        covered[tenant] = upto

    await migrate(work, schema)
    if progress is not None:
        progress(0, total)
    for tenant in tenants:
        upto = marks.get(tenant, 0)
        await catch_up(tenant, upto, shares_module.auto(upto) if shares is None else shares)
    if not compare:
        return Report(schema, covered, 0, [])
    async with snapshot(live):
        now = await live_checkpoints(live, live_schema)
        more = sum(max(0, now.get(t, 0) - covered[t]) for t in tenants)
        total += more
        for tenant in tenants:
            await catch_up(tenant, now.get(tenant, 0))
        rows, differences = await compare_schemas(live, live_schema, work, schema, tenants)
    return Report(schema, covered, rows, differences, more)


# -- the comparison ----------------------------------------------------------------------


def _filter(table: str, tenants: Sequence[str]) -> tuple[sql.Composable, list[Any]]:
    if table == CHECKPOINTS:
        return sql.SQL("stream = ANY(%s)"), [[schemas.stream_name(t) for t in tenants]]
    return sql.SQL("tenant = ANY(%s)"), [list(tenants)]


async def _columns(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    return [row[0] for row in await cur.fetchall()]


def _row_text(columns: Sequence[str]) -> sql.Composable:
    """A row's value as text, its columns in a fixed order (the rebuilt schema's)."""
    return sql.SQL("md5(ROW({})::text)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


async def _table_sum(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    tenants: Sequence[str],
) -> tuple[int, str | None]:
    """How many of the tenants' rows ``table`` holds, and a checksum over them."""
    where, params = _filter(table, tenants)
    # The sum of 60 bits of each row's md5: independent of order, constant memory, exact
    # (numeric); with the count, two tables that differ sum alike by chance about 2^-60.
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || substr({row}, 1, 15))::bit(60)::bigint), 0)"
        " FROM {t} WHERE {w}"
    )
    cur = await conn.execute(
        query.format(row=_row_text(columns), t=sql.Identifier(schema, table), w=where), params
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


async def _row_sums(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    tenants: Sequence[str],
) -> dict[tuple[Any, ...], str]:
    """Each of the tenants' rows of ``table`` by its primary key: its checksum."""
    where, params = _filter(table, tenants)
    key = TABLES[table]
    cur = await conn.execute(
        sql.SQL("SELECT {key}, {row} FROM {t} WHERE {w}").format(
            key=sql.SQL(", ").join(sql.Identifier(c) for c in key),
            row=_row_text(columns),
            t=sql.Identifier(schema, table),
            w=where,
        ),
        params,
    )
    return {tuple(r[: len(key)]): r[len(key)] for r in await cur.fetchall()}


async def _row(
    conn: psycopg.AsyncConnection[Any], schema: str, table: str, key: tuple[Any, ...]
) -> dict[str, Any] | None:
    names = TABLES[table]
    query = sql.SQL("SELECT * FROM {t} WHERE ({k}) = ({v})").format(
        t=sql.Identifier(schema, table),
        k=sql.SQL(", ").join(sql.Identifier(c) for c in names),
        v=sql.SQL(", ").join(sql.Placeholder() for _ in names),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, key)
        return await cur.fetchone()


async def compare_schemas(
    live: psycopg.AsyncConnection[Any],
    live_schema: str,
    rebuilt: psycopg.AsyncConnection[Any],
    rebuilt_schema: str,
    tenants: Sequence[str],
) -> tuple[int, list[Difference]]:
    """How many rows the tenants have in the live projection, and every difference between
    it and the rebuilt one, table by table in :data:`TABLES` order, rows in key order."""
    rows = 0
    out: list[Difference] = []
    for table, key in TABLES.items():
        columns = await _columns(rebuilt, rebuilt_schema, table)
        count, live_sum = await _table_sum(live, live_schema, table, columns, tenants)
        rows += count
        if (count, live_sum) == await _table_sum(rebuilt, rebuilt_schema, table, columns, tenants):
            continue
        mine = await _row_sums(live, live_schema, table, columns, tenants)
        theirs = await _row_sums(rebuilt, rebuilt_schema, table, columns, tenants)
        for k in sorted(mine.keys() | theirs.keys()):
            if mine.get(k) == theirs.get(k):
                continue
            a = await _row(live, live_schema, table, k)
            b = await _row(rebuilt, rebuilt_schema, table, k)
            where = dict(zip(key, k, strict=True))
            if a is None or b is None:
                out.append(Difference(table, where, None, a, b))
                continue
            out.extend(
                Difference(table, where, c, a.get(c), b.get(c))
                for c in columns
                if a.get(c) != b.get(c)
            )
    return rows, out


# -- making the rebuild live ---------------------------------------------------------------


async def swap(
    conn: psycopg.AsyncConnection[Any],
    logs: Mapping[str, Connection],
    schema: str,
    covered: Mapping[str, int],
    old_schema: str,
    *,
    live_schema: str = DEFAULT_SCHEMA,
) -> dict[str, int]:
    """Make the rebuilt projection in ``schema`` (each tenant of ``logs`` rebuilt up to
    ``covered``) the live one, in one transaction on ``conn`` (autocommit), and return the
    sequence each tenant's swapped-in projection holds.

    The transaction takes each tenant's projector lock in ``live_schema`` (a live projector's
    batch is either committed before or waits until after), then every projection table
    ACCESS EXCLUSIVE (readers wait for the swap, milliseconds, not a rebuild); replays into
    ``schema`` the messages the live projector applied since ``covered``; moves the live
    tables to the new schema ``old_schema`` and the rebuilt ones into ``live_schema``, where
    other objects are left alone. A reader's next transaction sees the rebuilt tables; a live
    projector's next batch goes on from the checkpoint they hold, which is its own.

    Refused (nothing changed) if the live projection holds a tenant not in ``logs``: the
    swap replaces whole tables, so every projected tenant must have been replayed.
    """
    tables = [*TABLES, VERSION_TABLE]
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(live_schema))
        )
        for tenant in sorted(logs):
            await store.lock(conn, tenant)
        await conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(live_schema, t) for t in tables)
            )
        )
        now = await live_checkpoints(conn, live_schema)
        others = sorted(set(now) - set(logs))
        if others:
            raise ReplayError(
                f"not swapped: the live projection also holds tenant(s) {', '.join(others)},"
                " which were not replayed (run `natchet replay --verify --swap` without --tenant)"
            )
        for tenant in sorted(logs):
            upto = now.get(tenant, 0)
            if upto < covered[tenant]:
                raise ReplayError(f"not swapped: the live projection of {tenant} went back")
            await rebuild(
                conn, logs[tenant], tenant, schema, start_seq=covered[tenant] + 1, until_seq=upto
            )
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(old_schema)))
        for table in tables:
            await conn.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    sql.Identifier(live_schema, table), sql.Identifier(old_schema)
                )
            )
            await conn.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    sql.Identifier(schema, table), sql.Identifier(live_schema)
                )
            )
        await conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema)))
    return {t: now.get(t, 0) for t in sorted(logs)}
