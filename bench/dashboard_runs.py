"""How fast the dashboard's run list answers at 1,000,000 runs (issue 12).

    .venv/bin/python -m bench.dashboard_runs [--runs 1000000] [--repeats 30] [--limit 50]
                                             [--count-limit 10000] [--plans]
                                             [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

In a throwaway database (created on the server of ``--dsn``, dropped at the end) it makes
the read model's tables (:func:`projector.migrate`) and fills them in SQL (generate_series,
untimed): ``--runs`` runs over 30 days, three at each instant; 80% of tenant ``acme``, 10%
each of ``beta`` and ``gamma``; namespaces default 80%, staging 15%, alice 5%; eight
workflows, skewed, and a rare one (0.5%); 85% SUCCEEDED, 5% FAILED (with an error), 2%
CANCELLED, the newest 0.5% QUEUED or RUNNING; 80% started by an event of one of six keys;
each run's steps (a four-step diamond for ``order-pipeline``, else one step). The runs'
indexes are dropped for the load and made again by :func:`projector.migrate`; then VACUUM
ANALYZE, as autovacuum would leave a table that stopped growing.

Then, for each scenario (first page, a deep keyset page, each filter, some combinations),
it calls :func:`projector.runs_page` as the dashboard does (``limit``, ``count_limit``)
``--repeats`` times on one connection and prints the median, p95 and first (coldest) time,
and the rows and total it got. ``--plans`` prints each scenario's EXPLAIN ANALYZE (of the
page query and of the count). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

import projector.queries
from bench.throwaway import database
from eventstore import run_main
from projector import migrate, runs_page

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAYS = 30
WORKFLOWS = [
    "order-pipeline", "user-signup", "send-email", "image-resize",
    "nightly-report", "billing-sync", "webhook-fanout", "search-index",
]  # fmt: skip
KEYS = ["order:placed", "user:create", "email:send", "image:uploaded", "billing:due", "hook:in"]

FILL_RUNS = """
INSERT INTO runs (id, tenant, namespace, workflow, workflow_version, status, input,
                  triggered_by_key, triggered_by_event_id, error, created_at, started_at,
                  finished_at, last_seq)
SELECT md5('run' || i)::uuid::text,
       CASE WHEN r1 < 0.8 THEN 'acme' WHEN r1 < 0.9 THEN 'beta' ELSE 'gamma' END,
       CASE WHEN r2 < 0.8 THEN 'default' WHEN r2 < 0.95 THEN 'staging' ELSE 'alice' END,
       CASE WHEN r3 < 0.005 THEN 'gdpr-export'
            ELSE (%(workflows)s::text[])[1 + floor(8 * r3 * r3)::int] END,
       'v1', status, jsonb_build_object('id', i, 'email', 'user' || i || '@example.com'),
       key, CASE WHEN key IS NULL THEN NULL ELSE (i * 11)::text END,
       CASE WHEN status = 'FAILED' THEN 'ValueError: card declined' END,
       created, created + interval '2 ms',
       CASE WHEN status IN ('QUEUED', 'RUNNING') THEN NULL
            ELSE created + r2 * interval '30 s' END,
       i * 11
FROM (
    SELECT i, r1, r2, r3,
           CASE WHEN i > %(n)s - %(n)s / 200 THEN (CASE WHEN r4 < 0.5 THEN 'QUEUED'
                                                        ELSE 'RUNNING' END)
                WHEN r4 < 0.05 THEN 'FAILED' WHEN r4 < 0.07 THEN 'CANCELLED'
                ELSE 'SUCCEEDED' END AS status,
           CASE WHEN r5 < 0.2 THEN NULL
                ELSE (%(keys)s::text[])[1 + floor(6 * (r5 - 0.2) / 0.8)::int] END AS key,
           %(t0)s::timestamptz + (i / 3) * %(gap)s::interval AS created
    FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                 random() AS r5
          FROM generate_series(1, %(n)s) AS i) AS g
) AS r
"""

FILL_STEPS = """
INSERT INTO steps (tenant, run_id, name, parents, status, output, queued_at, started_at,
                   finished_at, attempt, last_seq)
SELECT r.tenant, r.id, s.name, s.parents,
       CASE WHEN r.status IN ('QUEUED', 'RUNNING') AND s.name <> 'a' THEN 'PENDING'
            ELSE r.status END,
       CASE WHEN r.status = 'SUCCEEDED' THEN '{"ok": true}'::jsonb END,
       r.created_at, r.started_at, r.finished_at, 1, r.last_seq
FROM runs r
CROSS JOIN LATERAL (VALUES ('a', '{}'::text[]), ('b', '{a}'), ('c', '{a}'), ('d', '{b,c}'))
    AS s(name, parents)
WHERE s.name = 'a' OR r.workflow = 'order-pipeline'
"""


async def fill(conn: psycopg.AsyncConnection[Any], runs: int) -> None:
    await migrate(conn)
    cur = await conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'runs' AND schemaname = 'public'"
        " AND indexname <> 'runs_pkey'"
    )
    for (index,) in await cur.fetchall():
        await conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
    start = time.perf_counter()
    await conn.execute("SELECT setseed(0.12)")
    gap = dt.timedelta(days=DAYS) / (runs / 3)
    params = {"n": runs, "workflows": WORKFLOWS, "keys": KEYS, "t0": T0, "gap": gap}
    await conn.execute(FILL_RUNS, params)  # type: ignore[arg-type]
    await conn.execute(FILL_STEPS)
    print(f"filled in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    await migrate(conn)  # the runs' indexes, again
    await conn.execute("VACUUM ANALYZE")
    print(f"indexes, vacuum and analyze in {time.perf_counter() - start:.1f} s", flush=True)
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps),"
        " pg_size_pretty(pg_total_relation_size('runs')),"
        " pg_size_pretty(pg_indexes_size('runs'))"
    )
    row = await cur.fetchone()
    assert row is not None
    print(f"runs {row[0]:,}, steps {row[1]:,}; runs table {row[2]}, of which indexes {row[3]}")


async def deep_cursor(conn: psycopg.AsyncConnection[Any], tenant: str, offset: int) -> str:
    """The cursor a client holds after paging ``offset`` runs into ``tenant``'s list."""
    cur = await conn.execute(
        "SELECT created_at, id, tenant FROM runs WHERE tenant = %s"
        " ORDER BY created_at DESC, id, tenant OFFSET %s LIMIT 1",
        (tenant, offset),
    )
    row = await cur.fetchone()
    assert row is not None
    at = row[0].astimezone(dt.UTC).isoformat(timespec="microseconds")
    return projector.queries._cursor(at, row[1], row[2])


def scenarios(deep: str) -> list[tuple[str, dict[str, Any]]]:
    day = T0 + dt.timedelta(days=DAYS - 10)
    one_day = {"created_from": day, "created_to": day + dt.timedelta(days=1)}
    acme = {"tenant": "acme"}
    return [
        ("first page (tenant)", acme),
        ("deep page (tenant, 50% in)", {**acme, "after": deep}),
        ("all tenants (operator)", {}),
        ("status FAILED", {**acme, "status": "FAILED"}),
        ("status RUNNING (newest 0.5%)", {**acme, "status": "RUNNING"}),
        ("workflow send-email", {**acme, "workflow": "send-email"}),
        ("workflow gdpr-export (0.5%)", {**acme, "workflow": "gdpr-export"}),
        ("namespace alice (5%)", {**acme, "namespace": "alice"}),
        ("event key user:create", {**acme, "event_key": "user:create"}),
        ("time range (one day)", {**acme, **one_day}),
        ("run id prefix '3f'", {**acme, "run_id_prefix": "3f"}),
        ("run id prefix '3fa9c'", {**acme, "run_id_prefix": "3fa9c"}),
        ("namespace alice + FAILED", {**acme, "namespace": "alice", "status": "FAILED"}),
        ("FAILED + gdpr-export", {**acme, "status": "FAILED", "workflow": "gdpr-export"}),
        ("staging + send-email + key + day", {**acme, "namespace": "staging",
         "workflow": "send-email", "event_key": "email:send", **one_day}),
        ("FAILED, all tenants", {"status": "FAILED"}),
    ]  # fmt: skip


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def explain(conn: psycopg.AsyncConnection[Any], args: argparse.Namespace, f: Any) -> None:
    """EXPLAIN ANALYZE of each statement one page runs (the page, and the count if any)."""
    seen: list[tuple[Any, dict[str, Any]]] = []
    real = projector.queries._fetch

    async def record(c: Any, query: Any, params: Any, schema: Any, **kw: Any) -> Any:
        seen.append((query, params))
        return await real(c, query, params, schema, **kw)

    projector.queries._fetch = record  # type: ignore[assignment]
    try:
        await runs_page(conn, **f, limit=args.limit, count_limit=args.count_limit)
    finally:
        projector.queries._fetch = real
    for query, params in seen:
        q = query if isinstance(query, sql.Composable) else sql.SQL(query)
        cur = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ") + q, params)
        for (line,) in await cur.fetchall():
            print("      " + line)


async def measure(conn: psycopg.AsyncConnection[Any], args: argparse.Namespace) -> None:
    acme = await conn.execute("SELECT count(*) FROM runs WHERE tenant = 'acme'")
    (n,) = await acme.fetchone() or (0,)
    start = time.perf_counter()
    await runs_page(conn, tenant="acme", limit=args.limit)
    print(f"(an exact count, for scale: tenant acme's {n:,} runs, page and count in"
          f" {(time.perf_counter() - start) * 1000:.0f} ms)")  # fmt: skip
    deep = await deep_cursor(conn, "acme", n // 2)
    print(f"{'scenario':34} {'median':>8} {'p95':>8} {'first':>8}  rows  total")
    for name, f in scenarios(deep):
        took: list[float] = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            page = await runs_page(conn, **f, limit=args.limit, count_limit=args.count_limit)
            took.append((time.perf_counter() - start) * 1000)
        total = f"{page.total:,}{'' if page.exact else '+'}"
        print(
            f"{name:34} {statistics.median(took):6.1f}ms {p95(took):6.1f}ms {took[0]:6.1f}ms"
            f"  {len(page.rows):4}  {total}",
            flush=True,
        )
        if args.plans:
            await explain(conn, args, f)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50, help="runs a page (%(default)s)")
    parser.add_argument("--count-limit", type=int, default=10_000, help="(%(default)s)")
    parser.add_argument("--plans", action="store_true", help="EXPLAIN ANALYZE each scenario")
    parser.add_argument("--dsn", default=DSN, help="a Postgres server (default %(default)s)")
    args = parser.parse_args()
    async with (
        database(args.dsn, "natchet_bench_dashboard") as dsn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
    ):
        await fill(conn, args.runs)
        await measure(conn, args)


if __name__ == "__main__":
    run_main(main())
