"""The TypeScript worker through the secured stack: a tenant token (nct_...) puts it in the
tenant's own account, where the subjects and JetStream API calls it uses are exactly the
ones granted; a refused token stops it with exit code 77."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.e2e.test_typescript_worker import TS_MAIN, attempts_of, node_or_skip, ts_worker
from tests.support import clean_env, run_ends
from tests.tenancy.conftest import hatchet_with_token, new_tenant


async def test_the_typescript_worker_runs_with_a_tenant_token(
    tenancy_engine: Engine, auth_server: NatsServer, tdb: psycopg.AsyncConnection[Any]
) -> None:
    node = node_or_skip()
    tenant, token = await new_tenant(tenancy_engine, auth_server, "ts")
    env = {"HATCHET_CLIENT_TOKEN": token}
    async with ts_worker(node, auth_server, tenant, "ts-secure", "diamond,flaky", env=env) as ts:
        hatchet = hatchet_with_token(token)
        diamond = await hatchet.admin.aio_run_workflow("TsDiamond", {"n": 2})
        flaky = await hatchet.admin.aio_run_workflow("TsFlaky", {})
        ran = await run_ends(tdb, diamond.workflow_run_id, tenant=tenant)
        retried = await run_ends(tdb, flaky.workflow_run_id, tenant=tenant)
        hatchet.close()
    assert ran["status"] == "SUCCEEDED", ran
    assert {s["name"]: s["output"] for s in ran["steps"]}["join"] == {"sum": 7}
    assert retried["status"] == "SUCCEEDED", retried
    assert [a["status"] for a in await attempts_of(tdb, flaky.workflow_run_id)] == [
        "FAILED",
        "SUCCEEDED",
    ]
    # nothing it did was refused by the broker
    assert "ermission" not in ts.output(), ts.output()


async def test_a_refused_token_stops_the_typescript_worker(
    tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    node = node_or_skip()
    _, token = await new_tenant(tenancy_engine, auth_server, "ts")
    forged = token.rsplit(".", 1)[0] + ".not-the-secret"
    proc = await asyncio.create_subprocess_exec(
        node,
        str(TS_MAIN),
        "diamond",
        env=clean_env(HATCHET_CLIENT_TOKEN=forged),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 77, out
    assert b"refused the credentials" in out, out
