"""Bad input gets a clear, recorded outcome, and the messages behind it keep flowing."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from eventstore import AppendError
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet


def echo(hatchet: Hatchet, **step: Any) -> Any:
    @hatchet.workflow(name="Echo", on_events=["echo"])
    class Echo:
        @hatchet.step(**step)
        def say(self, context: Context) -> Any:
            return context.workflow_input()

    return Echo()


async def test_oversize_event_is_refused_clearly_and_the_next_one_flows(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("echo", max_runs=2)
    worker.register_workflow(echo(hatchet))
    async with running(worker):
        with pytest.raises(AppendError, match="maximum"):
            await hatchet.event.aio_push("echo", {"blob": "x" * (2 * 1024 * 1024)})
        await hatchet.event.aio_push("echo", {"small": True})

        async def the_small_one_ran() -> list[Any]:
            cur = await db.execute(
                "SELECT id FROM runs WHERE tenant = %s AND status = 'SUCCEEDED'", (tenant_name,)
            )
            return list(await cur.fetchall())

        [(run_id,)] = await eventually(the_small_one_ran)
    run = await run_ends(db, run_id)
    hatchet.close()
    assert run["input"] == {"small": True}


async def test_oversize_step_output_fails_the_step_not_the_worker(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Huge:
        @hatchet.step(retries=2)
        def big(self, context: Context) -> str:
            return "x" * (2 * 1024 * 1024)

    worker = hatchet.worker("huge", max_runs=1)
    worker.register_workflow(Huge())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Huge", {})
        run = await run_ends(db, ref.workflow_run_id)
        after = await hatchet.admin.aio_run_workflow("Huge", {})  # the worker still serves
        assert (await run_ends(db, after.workflow_run_id))["status"] == "FAILED"
    hatchet.close()
    assert run["status"] == "FAILED"
    [attempt] = run["steps"][0]["attempts"]  # non-retryable: no retries spent on it
    assert "step output is too large" in attempt["error"]


async def test_workflow_registered_twice_with_different_definitions(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """The newest registration wins; a worker with the old one leaves those tasks to a worker
    that has the new one; both versions are visible in the read model."""
    hatchet = hatchet_for(nats_server, tenant_name)
    old = hatchet.worker("old", max_runs=1)
    old.register_workflow(echo(hatchet))
    new = hatchet.worker("new", max_runs=1)
    new.register_workflow(echo(hatchet, retries=1))
    async with running(old), running(new):
        ref = await hatchet.admin.aio_run_workflow("Echo", {"v": 2})
        assert await ref.result() == {"say": {"v": 2}}
    run = await run_ends(db, ref.workflow_run_id)
    cur = await db.execute(
        "SELECT count(DISTINCT version) FROM workflows WHERE tenant = %s AND name = 'Echo'",
        (tenant_name,),
    )
    hatchet.close()
    assert (await cur.fetchone()) == (2,)
    assert [a["worker_name"] for a in run["steps"][0]["attempts"]] == ["new"]


async def test_workers_list_shows_liveness(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("visible", max_runs=3)
    worker.register_workflow(echo(hatchet))

    def listed() -> list[dict[str, Any]]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "natchet.cli",
                "workers",
                "list",
                "--json",
                "--tenant",
                tenant_name,
                "--nats-url",
                nats_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout))

    async with running(worker):
        [row] = await eventually(listed)
        assert row["name"] == "visible" and row["id"] == worker.id
        assert row["status"] == "ACTIVE" and row["slots"] == 3
        assert row["actions"] == ["Echo:say"]
    hatchet.close()
    [row] = listed()
    assert row["status"] == "STOPPED"
