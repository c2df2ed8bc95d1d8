"""Reading a run while the projector writes it: one snapshot for all of it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import projector.queries
from projector import get_run, migrate

Conn = psycopg.AsyncConnection[Any]


@pytest.mark.parametrize("autocommit", [True, False])
async def test_a_run_is_read_in_one_snapshot(
    dsn: str, monkeypatch: pytest.MonkeyPatch, autocommit: bool
) -> None:
    """A batch commits between the read of the run row and of its attempts: the run comes
    back as it was before that batch, run and attempt alike (not QUEUED with a RUNNING
    attempt, which a test saw under load)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as setup:
        await migrate(setup)
        await setup.execute(
            "INSERT INTO runs (id, tenant, namespace, workflow, status, created_at, last_seq)"
            " VALUES ('r1', 't', 'default', 'wf', 'QUEUED', now(), 1)"
        )
        await setup.execute(
            "INSERT INTO steps (tenant, run_id, name, parents, status, last_seq)"
            " VALUES ('t', 'r1', 'a', '{}', 'QUEUED', 1)"
        )
        real_fetch = projector.queries._fetch
        calls = 0

        async def fetch_then_a_batch_commits(*args: Any) -> Any:
            nonlocal calls
            rows = await real_fetch(*args)
            calls += 1
            if calls == 1:  # the run row is read: now the projector writes the next batch
                await setup.execute("UPDATE runs SET status = 'RUNNING' WHERE id = 'r1'")
                await setup.execute(
                    "INSERT INTO attempts (tenant, run_id, step, attempt, delivery, status,"
                    " last_seq) VALUES ('t', 'r1', 'a', 1, 1, 'RUNNING', 2)"
                )
            return rows

        monkeypatch.setattr(projector.queries, "_fetch", fetch_then_a_batch_commits)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit) as conn:
            run = await get_run(conn, "r1", tenant="t")
        assert run is not None
        assert (run["status"], run["steps"][0]["attempts"]) == ("QUEUED", [])
        monkeypatch.undo()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            run = await get_run(conn, "r1", tenant="t")
        assert run is not None
        assert (run["status"], len(run["steps"][0]["attempts"])) == ("RUNNING", 1)
