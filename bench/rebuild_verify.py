"""Proof that two versions of the rebuild compute the same read model from the bench log
(issue 10): each rebuilds it into a schema of its own in one kept database, then the two
schemas are compared with :func:`projector.replay.compare_schemas` (what ``natchet replay
--verify`` runs).

    .venv/bin/python -m bench.rebuild_verify build SCHEMA [--reuse DIR] [--db NAME] [--dsn DSN]
    .venv/bin/python -m bench.rebuild_verify compare SCHEMA_A SCHEMA_B [--db NAME] [--dsn DSN]
    .venv/bin/python -m bench.rebuild_verify drop [--db NAME] [--dsn DSN]

``build`` starts a nats-server on the store ``--reuse`` (the log ``bench/rebuild.py`` wrote
there) and rebuilds its tenant into ``SCHEMA`` with :func:`projector.replay.replay`
(``compare=False``), in database ``--db`` (made if missing, with a "live" projection whose
checkpoint is the log's end, as ``bench/rebuild.py`` makes it). Run with ``-m``, from the
directory of the tree to measure (with this file copied into its bench/ if it has none),
with ``PYTHONPATH`` set to it: each tree's ``build`` then runs its own code. ``compare``
prints the rows compared and every difference; ``drop`` drops the database. Not a test: it
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import psycopg
from psycopg import sql

from bench.rebuild import live_at
from bench.rebuild_log import TENANT
from eventstore import NatsOptions, close, connect, last_seq
from natchet.dev.embedded import NatsServer
from projector.migrations import DEFAULT_SCHEMA
from projector.replay import compare_schemas, replay

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _db_dsn(dsn: str, db: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=db)


async def _ensure_db(dsn: str, db: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


async def build(args: argparse.Namespace) -> None:
    await _ensure_db(args.dsn, args.db)
    with NatsServer(args.reuse) as server:
        nc = await connect(NatsOptions(server.url, name="bench-rebuild-verify"))
        try:
            end = await last_seq(nc, TENANT)
            async with (
                await psycopg.AsyncConnection.connect(
                    _db_dsn(args.dsn, args.db), autocommit=True
                ) as live,
                await psycopg.AsyncConnection.connect(
                    _db_dsn(args.dsn, args.db), autocommit=True
                ) as work,
            ):
                cur = await live.execute(
                    "SELECT to_regclass(%s)", (f"{DEFAULT_SCHEMA}.projector_checkpoints",)
                )
                row = await cur.fetchone()
                if row is None or row[0] is None:
                    await live_at(live, end)
                start = time.perf_counter()
                report = await replay(live, work, {TENANT: nc}, args.schema, compare=False)
                took = time.perf_counter() - start
            upto = report.covered[TENANT]
            print(f"{args.schema}: {TENANT} rebuilt through {upto:,} in {took:.1f} s")
        finally:
            await close(nc)


async def compare(args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(
        _db_dsn(args.dsn, args.db), autocommit=True
    ) as conn:
        rows, differences = await compare_schemas(conn, args.a, conn, args.b, [TENANT])
    print(f"{args.a} against {args.b}: {rows:,} rows, {len(differences)} differences")
    for d in differences[:50]:
        print("  " + d.describe())


async def drop(args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(args.db)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--db", default="natchet_rebuild_verify")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("build")
    one.add_argument("schema")
    one.add_argument("--reuse", type=Path, default=Path("/tmp/natchet-rebuild-log"))
    two = commands.add_parser("compare")
    two.add_argument("a")
    two.add_argument("b")
    commands.add_parser("drop")
    args = parser.parse_args()
    asyncio.run({"build": build, "compare": compare, "drop": drop}[args.command](args))


if __name__ == "__main__":
    main()
