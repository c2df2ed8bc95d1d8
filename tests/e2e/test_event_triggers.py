"""Issue 14: filtered and wildcard events start exactly the matching workflows (raw NATS
publishes included), never across namespaces; additional metadata goes from an event or a
request onto its runs and filters the run list."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope, encode
from schemas.messages import StepDef, WorkflowDef
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends, worker_env
from worker import Context, Hatchet


def declare(hatchet: Hatchet, name: str, events: list[str], event_filter: str | None = None) -> Any:
    @hatchet.workflow(name=name, on_events=events, event_filter=event_filter)
    class Wf:
        @hatchet.step()
        def only(self, context: Context) -> Any:
            return context.workflow_input()

    return Wf()


async def started(db: psycopg.AsyncConnection[Any], tenant: str) -> dict[str, set[str]]:
    """Every run's workflow, by the event that started it (its id); requests under None."""
    cur = await db.execute(
        "SELECT triggered_by_event_id, workflow FROM runs WHERE tenant = %s", (tenant,)
    )
    out: dict[str, set[str]] = {}
    for event_id, workflow in await cur.fetchall():
        out.setdefault(str(event_id), set()).add(workflow)
    return out


async def raw_publish(nc: NATS, subject: str, body: Any, headers: dict[str, str]) -> str:
    """A publish as `nats pub` makes it (no SDK), acknowledged by the log: its sequence."""
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
    return str(json.loads(reply.data)["seq"])


async def test_filtered_and_wildcard_events_start_exactly_the_matching_workflows(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    nc: NATS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dispatcher")
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("triggers", max_runs=8)
    for wf in (
        declare(hatchet, "Exact", ["order:paid"]),
        declare(hatchet, "Wild", ["order:*"]),
        declare(hatchet, "Big", ["order:*"], "input.amount > 100"),
        declare(hatchet, "Web", ["order:*"], 'additional_metadata.source == "web"'),
        declare(hatchet, "Users", ["user:*"]),
    ):
        worker.register_workflow(wf)
    scope = Scope(tenant_name)
    # A registration no SDK would send: its filter does not parse. The engine refuses it
    # (recorded with the position) and it never starts anything.
    broken = WorkflowDef(
        name="Broken", version="0", steps=[StepDef("only")], on_events=["order:*"],
        event_filter="input.amount >",
    )  # fmt: skip
    await nc.request(scope.workflow("Broken"), encode(broken), timeout=5)
    async with running(worker):
        web = {"additional_metadata": {"source": "web"}}
        paid = await hatchet.event.aio_push("order:paid", {"amount": 150}, web)
        small = await hatchet.event.aio_push("order:refund.eu", {"amount": 5})
        odd = await hatchet.event.aio_push("order:refund", {"amount": "lots"})
        raw = await raw_publish(
            nc, scope.event("order:paid"), {"amount": 500}, {"Natchet-Meta-source": "web"}
        )
        near = await hatchet.event.aio_push("orders:paid", {"amount": 500})
        last = await hatchet.event.aio_push("user:created", {})
        expected = {
            paid.event_id: {"Exact", "Wild", "Big", "Web"},
            small.event_id: {"Wild"},  # Big is false; Web errors (no "source"): no match
            odd.event_id: {"Wild"},  # Big errors ("lots" > 100): no match
            raw: {"Exact", "Wild", "Big", "Web"},
            last.event_id: {"Users"},
        }
        # Events are decided and projected in log order: once the last one's run is in,
        # every run the others started is too.
        await eventually(lambda: _has(db, tenant_name, last.event_id), timeout_s=30)
        assert await started(db, tenant_name) == expected
        assert near.event_id not in expected
        cur = await db.execute(
            "SELECT id FROM runs WHERE tenant = %s AND triggered_by_event_id = %s",
            (tenant_name, raw),
        )
        for (run_id,) in await cur.fetchall():
            run = await run_ends(db, run_id, tenant=tenant_name)
            assert run["status"] == "SUCCEEDED"
            assert run["additional_metadata"] == {"source": "web"}
            assert run["input"] == {"amount": 500}
    cur = await db.execute("SELECT reason FROM rejections WHERE tenant = %s", (tenant_name,))
    [(reason,)] = await cur.fetchall()
    assert "Broken" in reason and "line 1 column 14" in reason
    said = [r.getMessage() for r in caplog.records if r.name.startswith("dispatcher")]
    assert any(f"seq {odd.event_id} " in m and "does not start Big" in m for m in said)
    assert any("Broken" in m and "line 1 column 14" in m for m in said)
    hatchet.close()


async def _has(db: psycopg.AsyncConnection[Any], tenant: str, event_id: str) -> bool:
    return event_id in await started(db, tenant)


async def test_a_wildcard_never_matches_another_namespaces_events(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    alice = hatchet_for(nats_server, tenant_name, "alice")
    bob = hatchet_for(nats_server, tenant_name, "bob")
    alice_worker = alice.worker("alice", max_runs=2)
    alice_worker.register_workflow(declare(alice, "Everything", ["*"]))
    bob_worker = bob.worker("bob", max_runs=2)
    bob_worker.register_workflow(declare(bob, "Orders", ["order:*"]))
    async with running(alice_worker), running(bob_worker):
        bobs = await bob.event.aio_push("order:paid", {"who": "bob"})
        alices = await alice.event.aio_push("order:paid", {"who": "alice"})
        await eventually(lambda: _has(db, tenant_name, alices.event_id), timeout_s=30)
        runs = await started(db, tenant_name)
        assert runs == {bobs.event_id: {"Orders"}, alices.event_id: {"Everything"}}
    alice.close()
    bob.close()


def natchet(*args: str, database: str | None = None, **extra_env: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    flags = [] if database is None else ["--database-url", database]
    return subprocess.run(
        [sys.executable, "-m", "natchet.cli", *args, *flags],
        capture_output=True, text=True, timeout=60, check=True, env={**env, **extra_env},
    ).stdout  # fmt: skip


async def test_metadata_goes_from_events_and_requests_to_runs_and_filters_the_list(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    dsn: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("meta", max_runs=4)
    worker.register_workflow(declare(hatchet, "Meta", ["meta:*"]))
    async with running(worker):
        pushed = await hatchet.event.aio_push(
            "meta:go", {"n": 1}, options={"additional_metadata": {"customer": "acme", "n": 1}}
        )
        ref = await hatchet.admin.aio_run_workflow(
            "Meta", {"n": 2}, options={"additional_metadata": {"customer": "acme", "via": "api"}}
        )
        plain = await hatchet.admin.aio_run_workflow("Meta", {"n": 3})
        printed = await asyncio.to_thread(
            natchet, "event", "push", "meta:cli", '{"n": 4}', "--metadata", "customer=acme",
            "--metadata", "via=cli", **worker_env(nats_server, tenant_name),
        )  # fmt: skip
        cli_event = printed.rsplit("event id ", 1)[1].rstrip(")\n")
        await eventually(lambda: _has(db, tenant_name, cli_event), timeout_s=30)
        for run_id in (ref.workflow_run_id, plain.workflow_run_id):
            await run_ends(db, run_id, tenant=tenant_name)
        await eventually(lambda: _has(db, tenant_name, pushed.event_id), timeout_s=30)
    cur = await db.execute(
        "SELECT additional_metadata FROM events WHERE tenant = %s AND seq = %s",
        (tenant_name, int(pushed.event_id)),
    )
    assert await cur.fetchone() == ({"customer": "acme", "n": "1"},)
    run = await run_ends(db, ref.workflow_run_id, tenant=tenant_name)
    assert run["additional_metadata"] == {"customer": "acme", "via": "api"}

    async def listed(*pairs: str) -> set[str]:
        flags = [arg for pair in pairs for arg in ("--metadata", pair)]
        out = await asyncio.to_thread(
            natchet, "runs", "list", "--json", "--tenant", tenant_name, *flags, database=dsn
        )
        return {r["id"] for r in json.loads(out)["runs"]}

    acme = await listed("customer=acme")
    assert len(acme) == 3 and ref.workflow_run_id in acme
    assert plain.workflow_run_id not in acme
    assert await listed("customer=acme", "via=api") == {ref.workflow_run_id}
    [by_cli] = await listed("via=cli")
    assert by_cli not in (ref.workflow_run_id, plain.workflow_run_id)
    assert await listed("customer=other") == set()
    hatchet.close()
