"""A throwaway database for a benchmark: made on the server of a DSN, dropped after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql


@contextlib.asynccontextmanager
async def database(dsn: str, purpose: str) -> AsyncIterator[str]:
    """A fresh database ``natchet_bench_<purpose>_<random>`` on the server of ``dsn``,
    dropped afterwards: its DSN."""
    name = f"natchet_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(dsn, dbname=name)
        finally:
            await admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )
