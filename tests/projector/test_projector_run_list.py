"""The dashboard's run list: each filter selects exactly the runs a plain Python filter over
the same rows selects, in list order (newest first, then id, then tenant); paging under a
filter neither skips nor repeats a run, with ties on ``created_at`` and runs arriving
between pages; a capped count says it is capped; the events page lists the runs each
event started."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from projector import events_page, list_runs, migrate, runs_page

Conn = psycopg.AsyncConnection[Any]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
N = 60


def make_runs() -> list[dict[str, Any]]:
    """N runs of two tenants, two namespaces, three workflows, five statuses, two event keys
    (and none), ids sharing prefixes, four runs to each instant (ties)."""
    runs = []
    for n in range(N):
        key = (None, "user:create", "order:placed")[n % 3]
        runs.append(
            {
                "id": f"{'ab' if n % 4 == 0 else 'ac'}{n % 7:x}-{n:04d}",
                "tenant": ("acme", "beta")[n % 2],
                "namespace": ("default", "alice")[(n // 2) % 2],
                "workflow": ("one", "diamond", "retried")[n % 5 % 3],
                "status": STATUSES[n % 5],
                "triggered_by_key": key,
                "triggered_by_event_id": None if key is None else str(100 + n // 2),
                "created_at": T0 + dt.timedelta(seconds=n // 4),
            }
        )
    return runs


RUNS = make_runs()


async def insert(conn: Conn, runs: list[dict[str, Any]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO runs (id, tenant, namespace, workflow, status, triggered_by_key,"
            " triggered_by_event_id, created_at, last_seq) VALUES (%(id)s, %(tenant)s,"
            " %(namespace)s, %(workflow)s, %(status)s, %(triggered_by_key)s,"
            " %(triggered_by_event_id)s, %(created_at)s, 1)",
            runs,
        )


@pytest.fixture
async def db(dsn: str) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)
        await insert(conn, RUNS)
        yield conn


def in_list_order(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ordered = sorted(runs, key=lambda r: (-r["created_at"].timestamp(), r["id"], r["tenant"]))
    return [(r["tenant"], r["id"]) for r in ordered]


def keys(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["tenant"], r["id"]) for r in rows]


def matches(run: dict[str, Any], filters: dict[str, Any]) -> bool:
    """What ``filters`` mean, in plain Python."""
    columns = {"event_key": "triggered_by_key"}
    for name, value in filters.items():
        if name == "created_from":
            ok = run["created_at"] >= value
        elif name == "created_to":
            ok = run["created_at"] < value
        elif name == "run_id_prefix":
            ok = run["id"].startswith(value.strip())
        else:
            ok = run[columns.get(name, name)] == value
        if not ok:
            return False
    return True


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


FILTERS: list[dict[str, Any]] = [
    {},
    {"tenant": "acme"},
    {"tenant": "acme", "namespace": "alice"},
    {"tenant": "beta", "status": "FAILED"},
    {"status": "SUCCEEDED"},
    {"tenant": "acme", "workflow": "diamond"},
    {"tenant": "acme", "event_key": "user:create"},
    {"tenant": "beta", "created_from": at(3), "created_to": at(9)},
    {"tenant": "acme", "run_id_prefix": " ab "},
    {"tenant": "acme", "run_id_prefix": "ac3"},
    {"run_id_prefix": "zz"},
    {"tenant": "acme", "namespace": "default", "status": "QUEUED", "workflow": "one"},
    {"tenant": "beta", "status": "RUNNING", "event_key": "order:placed", "created_from": at(2)},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[str(sorted(f)) for f in FILTERS])
async def test_each_filter_selects_exactly_its_runs_in_list_order(
    db: Conn, filters: dict[str, Any]
) -> None:
    want = in_list_order([r for r in RUNS if matches(r, filters)])
    assert want or filters == {"run_id_prefix": "zz"}
    assert keys(await list_runs(db, **filters, limit=N)) == want
    # And page by page, 4 at a time: the same runs, each once, in the same order.
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page = await runs_page(db, **filters, limit=4, after=after)
        assert page.total == len(want) and page.exact
        seen += keys(page.rows)
        if page.next is None:
            break
        after = page.next
    assert seen == want


async def test_paging_under_a_filter_survives_new_runs_between_pages(db: Conn) -> None:
    """Runs created between pages (newer: they sort before the cursor) and runs tied with
    the cursor's instant never shift the pages already shown nor the ones that follow."""
    filters = {"tenant": "acme", "status": "SUCCEEDED"}
    want = in_list_order([r for r in RUNS if r["tenant"] == "acme" and r["status"] == "SUCCEEDED"])
    first = await runs_page(db, **filters, limit=2)
    assert first.next is not None
    newer = [
        {**RUNS[0], "id": f"new-{n}", "tenant": "acme", "status": "SUCCEEDED",
         "created_at": T0 + dt.timedelta(hours=1, seconds=n)}
        for n in range(5)
    ]  # fmt: skip
    await insert(db, newer)
    seen, after = keys(first.rows), first.next
    while after is not None:
        page = await runs_page(db, **filters, limit=2, after=after)
        seen += keys(page.rows)
        after = page.next
    assert seen == want


async def test_a_capped_count_says_it_is_a_lower_bound(db: Conn) -> None:
    page = await runs_page(db, tenant="acme", limit=5, count_limit=10)
    assert (page.total, page.exact, len(page.rows)) == (10, False, 5)
    exact = await runs_page(db, tenant="acme", limit=5, count_limit=100)
    assert (exact.total, exact.exact) == (N // 2, True)
    uncapped = await runs_page(db, tenant="acme", limit=5)
    assert (uncapped.total, uncapped.exact) == (N // 2, True)


async def test_a_naive_time_bound_is_refused(db: Conn) -> None:
    with pytest.raises(ValueError, match="time zone"):
        await list_runs(db, tenant="acme", created_from=dt.datetime(2026, 1, 1))


async def test_a_prefix_ending_in_the_last_code_point_still_bounds(db: Conn) -> None:
    odd = [
        {**RUNS[0], "id": "x\U0010ffff1"},
        {**RUNS[0], "id": "x\U0010ffff"},
        {**RUNS[0], "id": "y"},
    ]
    await insert(db, odd)
    found = await list_runs(db, tenant=RUNS[0]["tenant"], run_id_prefix="x\U0010ffff")
    assert sorted(r["id"] for r in found) == ["x\U0010ffff", "x\U0010ffff1"]


async def test_the_events_page_lists_the_runs_each_event_started(db: Conn) -> None:
    for seq in (100, 101, 140):
        await db.execute(
            "INSERT INTO events (tenant, namespace, seq, key, payload, valid)"
            " VALUES ('acme', 'default', %s, 'user:create', '{}', true)",
            (seq,),
        )
    page = await events_page(db, tenant="acme", limit=2, with_runs=True)
    assert [e["seq"] for e in page.rows] == [140, 101]
    assert page.rows[0]["runs"] == []
    started = [r for r in RUNS if r["tenant"] == "acme" and r["triggered_by_event_id"] == "101"]
    assert started
    assert [r["id"] for r in page.rows[1]["runs"]] == [
        r["id"] for r in sorted(started, key=lambda r: (r["created_at"], r["id"]))
    ]
    assert set(page.rows[1]["runs"][0]) == {"id", "workflow", "status", "created_at"}
    rest = await events_page(db, tenant="acme", limit=2, after=page.next, with_runs=True)
    assert [e["seq"] for e in rest.rows] == [100] and rest.next is None
    assert "runs" not in (await events_page(db, tenant="acme")).rows[0]


async def test_the_run_list_is_never_a_prepared_statement(db: Conn) -> None:
    """psycopg prepares a query run five times, and Postgres may then plan it once for any
    values: the run list is planned for each filter's own values instead."""
    for _ in range(12):
        await runs_page(db, tenant="acme", status="FAILED", workflow="one", limit=2)
    cur = await db.execute(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT%%'"
    )
    assert await cur.fetchall() == []
