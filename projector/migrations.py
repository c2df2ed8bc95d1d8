"""Creating the read model's tables, in any Postgres schema.

Every statement of ``schema.sql`` uses unqualified names and runs with ``search_path`` set
to the target schema, so a projection can be rebuilt into a fresh schema (``replay``) and
compared with the live one.

The layout is versioned (:data:`SCHEMA_VERSION`, recorded in ``projector_schema_version``).
Invariants of :func:`migrate`:

- afterwards the schema holds every table of :data:`TABLES` in the current layout, and the
  recorded version is :data:`SCHEMA_VERSION`;
- tables of an older layout (or of one from before versioning) are dropped, checkpoints
  included, and recreated empty: the projector then rebuilds them from the log, which is the
  truth. Nothing is altered in place;
- a newer recorded version than this code knows is refused (:class:`SchemaVersionError`),
  never dropped;
- it is idempotent, and concurrent calls on one database are serialized by an advisory
  lock, so the drop happens once and before any projector reads a checkpoint after it.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "public"

# 1: the first layout; 2: reliability columns (both unrecorded: no version table).
# 3: runs keyed by (tenant, id), steps, attempts and step_logs by tenant too.
# 4: runs.replay_of and runs.replay_from_step (re-runs), events.replay_of.
# 5: the run list's indexes (a range scan in list order under each filter), runs by event.
# 6 (issue 14): runs.parent_run_id, parent_step and child_key (child runs), runs_parent;
#    additional metadata (runs and events, a GIN index for the run list's filter);
#    steps.on_success; crons and schedules, and runs.triggered_by_cron,
#    triggered_by_schedule and trigger_fire_at (what started a run that no event or
#    request did).
# 7 (durable steps): steps.waiting_for (a WAITING step's conditions, as a sentence),
#    step_waits (each wait and its wake); attempts may be SUSPENDED (no column changed).
# 8 (concurrency keys, issue 15): runs.concurrency_key and runs.concurrency (the
#    workflow's expression, max_runs and limit strategy), runs_concurrency_key.
# 9 (priority, issue 15): runs.priority (its trigger's or its workflow's default; NULL: none).
SCHEMA_VERSION = 9

# Every projection table and the columns that order its rows (its primary key). The version
# table is not one: it says how the others are laid out, and holds nothing from the log.
TABLES: dict[str, tuple[str, ...]] = {
    "projector_checkpoints": ("stream",),
    "workflows": ("tenant", "namespace", "name", "version"),
    "events": ("tenant", "seq"),
    "runs": ("tenant", "id"),
    "steps": ("tenant", "run_id", "name"),
    "attempts": ("tenant", "run_id", "step", "attempt", "delivery"),
    "step_waits": ("tenant", "run_id", "step", "attempt", "wait_index"),
    "step_logs": ("tenant", "seq"),
    "rejections": ("tenant", "seq"),
    "crons": ("tenant", "namespace", "name"),
    "schedules": ("tenant", "namespace", "id"),
}
VERSION_TABLE = "projector_schema_version"

# Serializes concurrent migrations (two projectors starting at once) on one database.
_MIGRATE_LOCK = 0x6E617463  # "natc"


class SchemaVersionError(RuntimeError):
    """The schema was made by a newer projector than this one: it is left alone."""


def schema_sql() -> str:
    return importlib.resources.files("projector").joinpath("schema.sql").read_text("utf-8")


async def set_search_path(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Point unqualified names at ``schema`` until the current transaction ends."""
    await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))


async def _existing_tables(conn: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    """Which of the projection tables and the version table ``schema`` holds."""
    cur = await conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')"
        " ORDER BY c.relname",
        (schema, [*TABLES, VERSION_TABLE]),
    )
    return [row[0] for row in await cur.fetchall()]


async def _recorded_version(conn: psycopg.AsyncConnection[Any]) -> int | None:
    cur = await conn.execute("SELECT version FROM projector_schema_version")
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _drop_old_tables(
    conn: psycopg.AsyncConnection[Any], schema: str, tables: list[str], found: int | None
) -> None:
    """Drop the projection tables of an older layout (no CASCADE: a view someone built on
    them makes the migration fail loudly rather than vanish)."""
    old = [t for t in tables if t in TABLES]
    if not old:
        return
    log.warning(
        "projector schema %r has read model version %s, this projector needs %d: dropping"
        " its tables (%s) to rebuild the read model from the log",
        schema,
        "unrecorded (1 or 2)" if found is None else found,
        SCHEMA_VERSION,
        ", ".join(old),
    )
    for table in old:
        await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """Create ``schema`` and the projection tables in it, dropping those of an older layout
    first (see the module's invariants). Idempotent."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await set_search_path(conn, schema)
        tables = await _existing_tables(conn, schema)
        found = await _recorded_version(conn) if VERSION_TABLE in tables else None
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"projector schema {schema!r} has read model version {found}, newer than"
                f" this projector's {SCHEMA_VERSION}: upgrade natchet"
            )
        if found != SCHEMA_VERSION:
            await _drop_old_tables(conn, schema, tables, found)
        await conn.execute(schema_sql().encode())
        if found != SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO projector_schema_version (version) VALUES (%s)"
                " ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )
