"""Child workflows end to end (issue 14), on real NATS and Postgres: a parent that spawns 10
children, fails once and is retried ends with exactly 10 children; cancelling a parent
cancels its running children; a forged spawn request is rejected with a reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from eventstore import Append, append, replay
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import RunCreated, RunRequested, Scope, Trigger, TriggerKind, decode_subject, parse
from schemas.children import child_run_id
from schemas.codec import encode
from tests.conftest import eventually, running
from tests.e2e.test_cli_audit import natchet
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet, Workflow


class N(BaseModel):
    n: int


def child_flow(hatchet: Hatchet) -> Workflow:
    child = hatchet.workflow(name="Child", input_validator=N)

    @child.task()
    def double(input: N, ctx: Context) -> dict[str, int]:
        return {"v": input.n * 2}

    return child


async def children_in_log(nc: NATS, tenant: str, parent: str) -> list[str]:
    """The ids of the runs created (in the log) as children of ``parent``."""
    found = []
    async for rec in replay(nc, tenant, [f"{tenant}.*.runs.*.created"]):
        created = decode_subject(parse(rec.subject), rec.data)
        by = created.trigger if isinstance(created, RunCreated) else None
        if by is not None and by.kind is TriggerKind.CHILD and by.run_id == parent:
            found.append(created.run_id)
    return found


async def test_a_retried_parent_ends_with_exactly_its_ten_children(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    child = child_flow(hatchet)
    parent = hatchet.workflow(name="Fan")

    @parent.task(retries=1, execution_timeout=120)
    async def fan(input: Any, ctx: Context) -> dict[str, Any]:
        refs = [await ctx.aio_spawn_workflow("Child", {"n": i}) for i in range(10)]
        if ctx.attempt == 1:
            raise RuntimeError("fails once, after spawning")
        results = [await ref.aio_result() for ref in refs]
        return {
            "sum": sum(r["double"]["v"] for r in results),
            "ids": [r.workflow_run_id for r in refs],
        }

    worker = hatchet.worker("fan-worker", slots=12, workflows=[parent, child])
    async with running(worker):
        ref = await parent.aio_run_no_wait({})
        out = await ref.aio_result()
    hatchet.close()
    parent_id = ref.workflow_run_id
    assert out["fan"]["sum"] == sum(2 * i for i in range(10))
    ids = out["fan"]["ids"]
    assert ids == [child_run_id(Scope(tenant_name), parent_id, "fan", str(i)) for i in range(10)]

    run = await run_ends(db, parent_id)
    assert run["status"] == "SUCCEEDED"
    assert [a["attempt"] for a in run["steps"][0]["attempts"]] == [1, 2]
    # Exactly 10 children, in the log and in Postgres, all SUCCEEDED, linked to the parent.
    assert sorted(await children_in_log(nc, tenant_name, parent_id)) == sorted(ids)
    for child_id in ids:
        done = await run_ends(db, child_id, tenant=tenant_name)
        assert done["status"] == "SUCCEEDED"
        assert done["parent"] == {
            "run_id": parent_id,
            "step": "fan",
            "key": str(ids.index(child_id)),
        }
    cur = await db.execute(
        "SELECT count(*) FROM runs WHERE tenant = %s AND parent_run_id = %s",
        (tenant_name, parent_id),
    )
    assert (await cur.fetchone()) == (10,)
    cur = await db.execute("SELECT count(*) FROM runs WHERE tenant = %s", (tenant_name,))
    assert (await cur.fetchone()) == (11,)
    shown = await get_run(db, parent_id, tenant=tenant_name)
    assert shown is not None
    assert sorted(c["id"] for c in shown["children"]) == sorted(ids)
    assert {c["status"] for c in shown["children"]} == {"SUCCEEDED"}


async def test_v1_run_inside_a_task_is_a_child_of_that_task(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    child = child_flow(hatchet)
    parent = hatchet.workflow(name="Caller")

    @parent.task()
    async def call(input: Any, ctx: Context) -> dict[str, Any]:
        return await child.aio_run(N(n=21))

    @parent.task(parents=[call])
    def call_sync(input: Any, ctx: Context) -> dict[str, Any]:
        return child.run(N(n=5))  # a sync task: the same, from its thread

    worker = hatchet.worker("v1-children", slots=4, workflows=[parent, child])
    async with running(worker):
        ref = await parent.aio_run_no_wait({})
        out = await ref.aio_result()
    hatchet.close()
    assert out == {"call": {"double": {"v": 42}}, "call_sync": {"double": {"v": 10}}}
    parent_id = ref.workflow_run_id
    scope = Scope(tenant_name)
    for step, key in (("call", "0"), ("call_sync", "0")):
        kid = await run_ends(db, child_run_id(scope, parent_id, step, key), tenant=tenant_name)
        assert kid["parent"] == {"run_id": parent_id, "step": step, "key": key}


async def test_cancelling_a_parent_cancels_its_running_children(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    stopped: list[int] = []
    started: list[int] = []
    slow = hatchet.workflow(name="Slow", input_validator=N)

    @slow.task(execution_timeout=600)
    async def wait(input: N, ctx: Context) -> None:
        started.append(input.n)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            stopped.append(input.n)

    parent = hatchet.workflow(name="Boss")

    @parent.task(execution_timeout=600)
    async def spawn(input: Any, ctx: Context) -> Any:
        refs = await ctx.aio_spawn_workflows(
            [{"workflow_name": "Slow", "input": {"n": i}, "key": f"k{i}"} for i in range(3)]
        )
        return [await r.aio_result() for r in refs]

    worker = hatchet.worker("boss-worker", slots=6, workflows=[parent, slow])
    async with running(worker):
        ref = await parent.aio_run_no_wait({})
        await eventually(lambda: sorted(started) == [0, 1, 2])
        await hatchet.admin.aio_cancel(ref.workflow_run_id, "enough")
        run = await run_ends(db, ref.workflow_run_id)
        ids = [
            child_run_id(Scope(tenant_name), ref.workflow_run_id, "spawn", f"k{i}")
            for i in range(3)
        ]
        for child_id in ids:
            child = await run_ends(db, child_id, tenant=tenant_name)
            assert child["status"] == "CANCELLED"
            assert (
                child["error"] == f"cancelled: its parent run {ref.workflow_run_id} was cancelled"
            )
            assert child["steps"][0]["status"] == "CANCELLED"
        await eventually(lambda: sorted(stopped) == [0, 1, 2])  # their steps stopped
    hatchet.close()
    assert run["status"] == "CANCELLED"


async def test_forged_spawn_requests_are_rejected_with_a_reason(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    child = child_flow(hatchet)
    release = asyncio.Event()
    parent = hatchet.workflow(name="Holder")

    @parent.task(execution_timeout=600)
    async def hold(input: Any, ctx: Context) -> str:
        await release.wait()
        return "done"

    worker = hatchet.worker("holder", slots=2, workflows=[parent, child])
    async with running(worker):
        ref = await parent.aio_run_no_wait({})
        parent_id = ref.workflow_run_id
        await eventually(lambda: _running(db, tenant_name, parent_id))

        async def forge(scope: Scope, parent_run: str, run_id: str | None = None) -> str:
            trigger = Trigger(TriggerKind.CHILD, run_id=parent_run, step="hold", key="0")
            rid = run_id or child_run_id(scope, parent_run, "hold", "0")
            req = RunRequested(rid, "Child", {"n": 1}, trigger=trigger)
            await append(nc, Append(scope.run(rid, "requested"), encode(req), f"{rid}:requested"))
            return rid

        other = Scope(tenant_name, "other")
        cross = await forge(other, parent_id)  # the parent is in namespace default
        unknown = await forge(Scope(tenant_name), "no-such-run")
        made_up = await forge(Scope(tenant_name), parent_id, run_id="my-own-id")
        for rid, reason in (
            (cross, f"no run {parent_id} in flight in {tenant_name}.other"),
            (unknown, f"no run no-such-run in flight in {tenant_name}.default"),
            (made_up, "not my-own-id"),
        ):
            rejected = await run_ends(db, rid, tenant=tenant_name)
            assert rejected["status"] == "FAILED"
            assert reason in rejected["error"]
        release.set()
        assert (await run_ends(db, parent_id))["status"] == "SUCCEEDED"
        shown = await get_run(db, parent_id, tenant=tenant_name)
        assert shown is not None and shown["children"] == []
    hatchet.close()


async def _running(db: psycopg.AsyncConnection[Any], tenant: str, run_id: str) -> bool:
    run = await get_run(db, run_id, tenant=tenant)
    return run is not None and run["status"] == "RUNNING"


async def test_audit_and_runs_get_show_the_link_both_ways(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    child = child_flow(hatchet)
    parent = hatchet.workflow(name="Pair")

    @parent.task()
    async def both(input: Any, ctx: Context) -> list[Any]:
        refs = [await ctx.aio_spawn_workflow("Child", {"n": i}, key=f"c{i}") for i in range(2)]
        return [await r.aio_result() for r in refs]

    worker = hatchet.worker("pair-worker", slots=4, workflows=[parent, child])
    async with running(worker):
        ref = await parent.aio_run_no_wait({})
        await ref.aio_result()
    hatchet.close()
    parent_id = ref.workflow_run_id
    ids = [child_run_id(Scope(tenant_name), parent_id, "both", f"c{i}") for i in range(2)]
    for child_id in ids:
        await run_ends(db, child_id, tenant=tenant_name)

    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", parent_id, "--json")
    assert code == 0, err
    audit = json.loads(out)
    assert [c["id"] for c in audit["run"]["children"]] == ids
    assert audit["run"]["parent"] is None
    spawned = [e for e in audit["entries"] if e["kind"] == "requested" and ids[0] in e["subject"]]
    assert spawned and f"requested by run {parent_id}, step both, key c0" in spawned[0]["summary"]

    code, out, err = await natchet(tmp_path, nats_server, tenant_name, "audit", ids[1])
    assert code == 0, err
    assert f"child of run {parent_id} (step both, key c1)" in out
    assert f"as a child of run {parent_id} (step both, key c1)" in out

    code, out, err = await natchet(
        tmp_path, nats_server, tenant_name, "runs", "get", parent_id, "--database-url", dsn
    )
    assert code == 0, err
    assert "children (2):" in out
    assert all(f"{i}  Child  SUCCEEDED  step both" in out for i in ids)
    code, out, err = await natchet(
        tmp_path, nats_server, tenant_name, "runs", "get", ids[0], "--database-url", dsn
    )
    assert code == 0, err
    assert f"parent: run {parent_id} step both key c0" in out


async def test_replays_of_a_parent_and_of_a_child(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """A parent re-run is a new run id, so its steps spawn new children (the parent's id is
    part of theirs); a child re-run is a run of its own, linked to the child it re-runs and
    to no parent."""
    hatchet = hatchet_for(nats_server, tenant_name)
    child = child_flow(hatchet)
    parent = hatchet.workflow(name="Twice")

    @parent.task()
    async def go(input: Any, ctx: Context) -> Any:
        ref = await ctx.aio_spawn_workflow("Child", {"n": 3})
        await ref.aio_result()  # over before the parent: a replay of it may follow at once
        return ref.workflow_run_id

    worker = hatchet.worker("twice-worker", slots=4, workflows=[parent, child])
    async with running(worker):
        first = await parent.aio_run_no_wait({})
        first_child = (await first.aio_result())["go"]
        again = await hatchet.admin.aio_replay(first.workflow_run_id)
        second_child = (await again.aio_result())["go"]
        kid_again = await hatchet.admin.aio_replay(first_child)
        assert await kid_again.aio_result() == {"double": {"v": 6}}
    hatchet.close()
    scope = Scope(tenant_name)
    assert first_child == child_run_id(scope, first.workflow_run_id, "go", "0")
    assert second_child == child_run_id(scope, again.workflow_run_id, "go", "0")
    second = await run_ends(db, second_child, tenant=tenant_name)
    assert second["parent"] == {"run_id": again.workflow_run_id, "step": "go", "key": "0"}
    rerun = await run_ends(db, kid_again.workflow_run_id, tenant=tenant_name)
    assert rerun["parent"] is None
    assert rerun["replay_of"] == {"run_id": first_child, "from_step": None}
