"""A throwaway database (for a benchmark, or a test): made on the server of a DSN, dropped
after."""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql


@contextlib.asynccontextmanager
async def database(dsn: str, prefix: str) -> AsyncIterator[str]:
    """A fresh database ``<prefix>_<random>`` on the server of ``dsn``, dropped afterwards
    however the block ends: its DSN. Create and drop each use a connection of their own, so
    none is held while the block runs (a test may restart the server meanwhile)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(dsn, name)
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            await admin.execute(drop.format(sql.Identifier(name)))


def _with_dbname(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name``, in the form it came in (a URL stays a URL)."""
    if "://" in dsn:
        return urllib.parse.urlsplit(dsn)._replace(path=f"/{name}").geturl()
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)
