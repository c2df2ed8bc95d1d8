"""``runs list`` and ``events list`` say when they cut the list, and page through it with a
cursor (``--after``) that neither skips nor repeats a row, ties on the sort key included."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from projector import list_runs, migrate
from projector.queries import CursorError, events_page, runs_page

NATCHET = [sys.executable, "-m", "natchet.cli"]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RUNS = 7
EVENTS = 5


@pytest.fixture
async def read_model(dsn: str) -> str:
    """A projection with RUNS runs of two tenants (some created at the same instant) and
    EVENTS events."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)
        for n in range(RUNS):
            await conn.execute(
                "INSERT INTO runs (id, tenant, namespace, workflow, status, created_at, last_seq)"
                " VALUES (%s, %s, 'default', 'Flow', 'SUCCEEDED', %s, %s)",
                (f"r{n % 3}", f"t{n // 3}", T0 + dt.timedelta(seconds=n // 2), n),
            )
        for n in range(EVENTS):
            await conn.execute(
                "INSERT INTO events (tenant, namespace, seq, key, payload, valid)"
                " VALUES (%s, 'default', %s, 'user:create', '{}', true)",
                (f"t{n % 2}", n // 2 + 1),
            )
    return dsn


async def test_runs_page_through_every_run_once_in_list_order(read_model: str) -> None:
    async with await psycopg.AsyncConnection.connect(read_model) as conn:
        everything = await list_runs(conn)
        seen: list[dict[str, Any]] = []
        after = None
        while True:
            page = await runs_page(conn, limit=3, after=after)
            assert page.total == RUNS
            seen += page.rows
            if page.next is None:
                break
            after = page.next
        assert [(r["tenant"], r["id"]) for r in seen] == [
            (r["tenant"], r["id"]) for r in everything
        ]
        whole = await runs_page(conn, limit=RUNS)
        assert (whole.total, whole.next, len(whole.rows)) == (RUNS, None, RUNS)
        with pytest.raises(CursorError):
            await runs_page(conn, after="bm90IGEgY3Vyc29y")


async def test_events_page_through_every_event_once(read_model: str) -> None:
    async with await psycopg.AsyncConnection.connect(read_model) as conn:
        first = await events_page(conn, limit=2)
        second = await events_page(conn, limit=2, after=first.next)
        third = await events_page(conn, limit=2, after=second.next)
    keys = [(e["seq"], e["tenant"]) for e in first.rows + second.rows + third.rows]
    assert keys == sorted(keys, key=lambda k: (-k[0], k[1])) and len(set(keys)) == EVENTS
    assert (first.total, third.next) == (EVENTS, None)


def natchet(*args: str, database: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    return subprocess.run(
        [*NATCHET, *args, "--database-url", database],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )


async def test_cli_runs_list_says_it_truncated_and_pages_with_after(read_model: str) -> None:
    out = await asyncio.to_thread(natchet, "runs", "list", "--limit", "3", database=read_model)
    assert len(out.stdout.splitlines()) == 1 + 3  # the header and three runs
    [note] = out.stderr.splitlines()
    assert note.startswith(f"showing 3 of {RUNS} runs (use --limit or --after "), note

    pages = []
    after: list[str] = []
    while True:
        out = await asyncio.to_thread(
            natchet, "runs", "list", "--json", "--limit", "3", *after, database=read_model
        )
        page = json.loads(out.stdout)
        assert page["total"] == RUNS
        pages.append(page["runs"])
        if page["next"] is None:
            break
        after = ["--after", page["next"]]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert len({(r["tenant"], r["id"]) for p in pages for r in p}) == RUNS

    whole = await asyncio.to_thread(natchet, "runs", "list", database=read_model)
    assert whole.stderr == ""  # nothing was left out: nothing to say


async def test_cli_events_list_says_it_truncated(read_model: str) -> None:
    out = await asyncio.to_thread(natchet, "events", "list", "--limit", "2", database=read_model)
    [note] = out.stderr.splitlines()
    assert note.startswith(f"showing 2 of {EVENTS} events (use --limit or --after "), note


def test_cli_list_help_shows_the_default_limit() -> None:
    for group in ("runs", "events"):
        out = subprocess.run(
            [*NATCHET, group, "list", "--help"], capture_output=True, text=True, check=True
        )
        text = " ".join(out.stdout.split())  # however argparse wrapped it
        assert "--limit" in text and "(default: 100)" in text and "--after" in text
