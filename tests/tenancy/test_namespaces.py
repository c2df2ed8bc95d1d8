"""alice and bob share a tenant, a workflow name and an event key, and never meet."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from natchet.dev.demo import raw_publish
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import list_runs
from tests.conftest import eventually, running
from tests.support import run_ends
from tests.tenancy.conftest import hatchet_with_token, new_tenant
from worker import Context, Hatchet

pytestmark = pytest.mark.timeout(120)


def greet(hatchet: Hatchet, who: str) -> Any:
    @hatchet.workflow(name="Greet", on_events=["user:create"])
    class Greet:
        @hatchet.step()
        def hello(self, context: Context) -> dict[str, Any]:
            return {"worker": who, "input": context.workflow_input()}

    return Greet()


async def test_alice_and_bob_never_see_each_others_runs(
    tenancy_engine: Engine, auth_server: NatsServer, tdb: psycopg.AsyncConnection[Any]
) -> None:
    tenant, token = await new_tenant(tenancy_engine, auth_server, "ns")
    alice, bob = hatchet_with_token(token, "alice"), hatchet_with_token(token, "bob")
    a_worker, b_worker = alice.worker("alice-w"), bob.worker("bob-w")
    a_worker.register_workflow(greet(alice, "alice"))
    b_worker.register_workflow(greet(bob, "bob"))
    async with running(a_worker), running(b_worker):
        await alice.event.aio_push("user:create", {"from": "alice-sdk"})
        # nats pub as the tenant, on alice's namespaced subject, with the token
        await asyncio.to_thread(  # the callout answers on this loop: do not block it
            raw_publish,
            "127.0.0.1",
            auth_server.port,
            f"{tenant}.alice.events.user:create",
            [b'{"from": "alice-nats"}'],
            token,
        )
        await bob.event.aio_push("user:create", {"from": "bob-sdk"})

        async def three() -> list[dict[str, Any]] | None:
            runs = await list_runs(tdb, tenant=tenant)
            assert len(runs) == 3, [(r["namespace"], r["status"]) for r in runs]
            return runs

        runs = await eventually(three)
        ended = [await run_ends(tdb, r["id"]) for r in runs]
    alice.close()
    bob.close()

    by_ns: dict[str, list[dict[str, Any]]] = {}
    for run in ended:
        assert run["status"] == "SUCCEEDED", run
        by_ns.setdefault(run["namespace"], []).append(run)
    assert sorted(by_ns) == ["alice", "bob"]
    for ns, runs in by_ns.items():
        for run in runs:
            (step,) = run["steps"]
            assert step["output"]["worker"] == ns  # run by its own namespace's worker
            assert step["output"]["input"]["from"].startswith(ns)  # from its own events
    assert len(by_ns["alice"]) == 2 and len(by_ns["bob"]) == 1
