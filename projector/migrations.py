"""Creating the read model's tables, in any Postgres schema.

Every statement of ``schema.sql`` uses unqualified names and runs with ``search_path`` set
to the target schema, so a projection can be rebuilt into a fresh schema (``replay``) and
compared with the live one.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_SCHEMA = "public"

# Every projection table and the columns that order its rows (its primary key).
TABLES: dict[str, tuple[str, ...]] = {
    "projector_checkpoints": ("stream",),
    "workflows": ("tenant", "namespace", "name", "version"),
    "events": ("tenant", "seq"),
    "runs": ("id",),
    "steps": ("run_id", "name"),
    "attempts": ("run_id", "step", "attempt", "delivery"),
    "step_logs": ("tenant", "seq"),
    "rejections": ("tenant", "seq"),
}

# Serializes concurrent migrations (two projectors starting at once) on one database.
_MIGRATE_LOCK = 0x6E617463  # "natc"


def schema_sql() -> str:
    return importlib.resources.files("projector").joinpath("schema.sql").read_text("utf-8")


async def set_search_path(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """Point unqualified names at ``schema`` until the current transaction ends."""
    await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """Create ``schema`` and the projection tables in it, if missing. Idempotent."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await set_search_path(conn, schema)
        await conn.execute(schema_sql().encode())
