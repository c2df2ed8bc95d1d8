"""``natchet runs cancel --status/--workflow/--since [--yes]``: every run not yet ended that
the filters select (all of them, past any page), counted and confirmed first; a cancel
request per run, in the log. The CLI as a real process, stdin never a terminal."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg
from nats.aio.client import Client as NATS

import eventstore
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run, migrate
from schemas import Scope, stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context

ROOT = Path(__file__).resolve().parents[2]
NATCHET = [sys.executable, "-m", "natchet.cli"]
MANY = 130  # more than a batch of appends, more than a page of `runs list`


async def natchet(
    tmp_path: Path, server: NatsServer, dsn: str, tenant: str, *args: str
) -> tuple[int, str, str]:
    """The CLI, stdin not a terminal (as in a script or CI), without blocking the loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    proc = await asyncio.create_subprocess_exec(
        *NATCHET,
        "runs",
        "cancel",
        *args,
        "--nats-url",
        server.url,
        "--database-url",
        dsn,
        "--tenant",
        tenant,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cancel_requests(nc: NATS, tenant: str) -> dict[str, dict[str, Any]]:
    """Every cancel request in the tenant's log, by subject."""
    subjects = [f"{tenant}.*.runs.*.cancel_requested"]
    return {
        r.subject: orjson.loads(r.data)
        async for r in eventstore.read_to_end(nc, stream_name(tenant), subjects)
    }


async def test_bulk_cancel_of_a_read_model_of_many_runs(
    nats_server: NatsServer, nc: NATS, dsn: str, tenant_name: str, tmp_path: Path
) -> None:
    """A read model written by hand (no engine: what the log then holds is only what the CLI
    appended): MANY running runs of W, and runs each filter must leave out."""
    await eventstore.ensure_tenant_stream(nc, tenant_name)
    now = dt.datetime.now(dt.UTC)
    recent, old = now - dt.timedelta(minutes=10), now - dt.timedelta(hours=3)
    rows = [(f"w{n:03}", tenant_name, "default", "W", "RUNNING", recent) for n in range(MANY)]
    rows += [
        ("old1", tenant_name, "default", "W", "RUNNING", old),  # before --since
        ("other1", tenant_name, "default", "Other", "RUNNING", recent),  # another workflow
        ("done1", tenant_name, "default", "W", "SUCCEEDED", recent),  # ended
        ("queued1", tenant_name, "ns2", "W", "QUEUED", recent),  # another status, namespace
        ("w000", "someone-else", "default", "W", "RUNNING", recent),  # another tenant
    ]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO runs (id, tenant, namespace, workflow, status, created_at, last_seq)"
                " VALUES (%s, %s, %s, %s, %s, %s, 1)",
                rows,
            )
    filters = ("--status", "running", "--workflow", "W", "--since", "1h")
    said = f"{MANY} runs match (tenant={tenant_name}, status=RUNNING, workflow=W, since=1h)"

    # No --yes, and no terminal to ask: refused in one line, nothing appended.
    code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, *filters)
    assert (code, out.strip()) == (2, said), (out, err)
    [line] = err.strip().splitlines()
    assert line.startswith("natchet: ") and "pass --yes" in line, line
    assert await cancel_requests(nc, tenant_name) == {}

    code, out, err = await natchet(
        tmp_path, nats_server, dsn, tenant_name, *filters, "--reason", "bulk", "--yes"
    )
    assert code == 0, err
    assert out.splitlines() == [said, f"cancel requested for {MANY} runs, 0 failed"]
    requests = await cancel_requests(nc, tenant_name)
    scope = Scope(tenant_name)
    assert set(requests) == {scope.run(f"w{n:03}", "cancel_requested") for n in range(MANY)}
    assert {r["reason"] for r in requests.values()} == {"bulk"}

    # Without --status: the runs not yet ended (QUEUED ones too), here of one namespace.
    code, out, err = await natchet(
        tmp_path, nats_server, dsn, tenant_name, "--workflow", "W", "--namespace", "ns2", "--yes"
    )
    assert code == 0, err
    assert "1 run match (" in out and "status=QUEUED|RUNNING" in out, out
    assert Scope(tenant_name, "ns2").run("queued1", "cancel_requested") in await cancel_requests(
        nc, tenant_name
    )

    code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, "--workflow", "Nope")
    assert (code, err) == (0, "") and out.startswith("no runs match (tenant="), (out, err)
    code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, "--status", "SUCCEEDED")
    assert (code, err) == (0, "") and "changes nothing" in out, (out, err)
    assert len(await cancel_requests(nc, tenant_name)) == MANY + 1


async def test_bulk_cancel_ends_only_the_selected_running_runs(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    nc: NATS,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    """A real engine and worker: runs of two workflows block in their step; cancelling the
    running runs of one ends exactly those CANCELLED, the others go on."""
    hatchet = hatchet_for(nats_server, tenant_name)
    release = asyncio.Event()

    async def block() -> dict[str, bool]:
        await release.wait()
        return {"done": True}

    @hatchet.workflow(name="Doomed")
    class Doomed:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, bool]:
            return await block()

    @hatchet.workflow(name="Spared")
    class Spared:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, bool]:
            return await block()

    worker = hatchet.worker("blocker", max_runs=6)
    worker.register_workflow(Doomed())
    worker.register_workflow(Spared())
    async with running(worker):
        doomed = [(await hatchet.admin.aio_run_workflow("Doomed", {})).workflow_run_id]
        doomed += [(await hatchet.admin.aio_run_workflow("Doomed", {})).workflow_run_id]
        doomed += [(await hatchet.admin.aio_run_workflow("Doomed", {})).workflow_run_id]
        spared = [(await hatchet.admin.aio_run_workflow("Spared", {})).workflow_run_id]
        spared += [(await hatchet.admin.aio_run_workflow("Spared", {})).workflow_run_id]

        async def all_running() -> bool:
            runs = [await get_run(db, r, tenant=tenant_name) for r in doomed + spared]
            return all(r is not None and r["status"] == "RUNNING" for r in runs)

        await eventually(all_running, timeout_s=30)
        filters = ("--status", "RUNNING", "--workflow", "Doomed")

        code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, *filters)
        assert code == 2 and "3 runs match" in out and "--yes" in err, (out, err)
        for run_id in doomed:
            subject = Scope(tenant_name).run(run_id, "cancel_requested")
            assert await eventstore.direct_last(nc, tenant_name, subject) is None

        code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, *filters, "--yes")
        assert code == 0 and "cancel requested for 3 runs, 0 failed" in out, (out, err)
        for run_id in doomed:
            assert (await run_ends(db, run_id, tenant=tenant_name))["status"] == "CANCELLED"
        for run_id in spared:
            run = await get_run(db, run_id, tenant=tenant_name)
            assert run is not None and run["status"] == "RUNNING", run
            assert run["cancel_requested_at"] is None

        # One run by its id, as before.
        code, out, err = await natchet(tmp_path, nats_server, dsn, tenant_name, spared[0])
        assert code == 0 and f"cancel requested for run {spared[0]}" in out, (out, err)
        assert (await run_ends(db, spared[0], tenant=tenant_name))["status"] == "CANCELLED"
        release.set()
        assert (await run_ends(db, spared[1], tenant=tenant_name))["status"] == "SUCCEEDED"
    hatchet.close()
