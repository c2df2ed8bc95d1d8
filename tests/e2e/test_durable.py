"""Durable steps end to end, on real NATS and Postgres (issue 14): a step that sleeps or
waits for an event gives its worker's slot back, resumes after the time or the first
matching event, on any worker, across an engine restart and a killed worker; a wait that
can never end fails its step, whoever appended it."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from eventstore import Append, append
from eventstore.read import direct_history
from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import encode
from schemas.codec import decode_subject
from schemas.durable import StepWaiting, StepWoken, WaitCondition, WaitKind
from schemas.messages import Task
from schemas.subjects import Scope, parse
from tests.conftest import eventually, running
from tests.support import hatchet_for, worker_process
from worker import (
    Context,
    Hatchet,
    SleepCondition,
    UserEventCondition,
    WorkflowRunError,
    or_,
)

pytestmark = pytest.mark.timeout(120)


async def history(nc: NATS, scope: Scope, run_id: str, kind: str) -> list[Any]:
    """The run's messages of ``kind`` in the log, decoded, in order."""
    out = []
    async for rec in direct_history(nc, scope.tenant, scope.run(run_id, kind)):
        out.append(decode_subject(parse(rec.subject), rec.data))
    return out


async def tasks_of(nc: NATS, scope: Scope, workflow: str, step: str) -> list[Task]:
    out = []
    async for rec in direct_history(nc, scope.tenant, scope.task(workflow, step)):
        task = decode_subject(parse(rec.subject), rec.data)
        assert isinstance(task, Task)
        out.append(task)
    return out


async def waiting(nc: NATS, scope: Scope, run_id: str, count: int = 1) -> list[StepWaiting]:
    async def recorded() -> list[StepWaiting] | None:
        found = await history(nc, scope, run_id, "waiting")
        return found if len(found) >= count else None

    return await eventually(recorded, timeout_s=30)


def napper(hatchet: Hatchet, runs: list[int], nap_s: float = 4) -> Any:
    @hatchet.durable_task(name="Nap", execution_timeout=30)
    async def nap(input: Any, ctx: Context) -> dict[str, Any]:
        runs.append(ctx.delivery)
        woke = await ctx.aio_sleep_for(nap_s)
        return {"woke": woke, "delivery": ctx.delivery}

    return nap


async def test_a_sleeping_step_frees_its_slot_and_wakes_once_across_an_engine_restart(
    nats_server: NatsServer, nc: NATS, dsn: str, tenant_name: str
) -> None:
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,))
    scope = Scope(tenant_name)
    hatchet = hatchet_for(nats_server, tenant_name)
    runs: list[int] = []
    nap = napper(hatchet, runs)

    @hatchet.task(name="Quick")
    async def quick(input: Any, ctx: Context) -> str:
        return "quick"

    worker = hatchet.worker("one-slot", slots=1, workflows=[nap, quick])
    first = Engine(settings)
    await first.start()
    try:
        async with running(worker):
            ref = await nap.aio_run_no_wait()
            run_id = ref.workflow_run_id
            [wait] = await waiting(nc, scope, run_id)
            # The only slot is free while the step sleeps: another run goes through.
            assert await quick.aio_run() == "quick"
            assert await history(nc, scope, run_id, "finished") == []
            # The engine stops, and is back before the sleep ends.
            await first.shutdown()
            async with Engine(settings):
                out = await asyncio.wait_for(ref.aio_result(), 30)
    finally:
        await first.shutdown()
    hatchet.close()
    assert out["woke"] == {"condition": 0, "kind": "sleep"}
    assert runs == [1, 2]  # ran again from its start once woken: the attempt's delivery 2
    assert out["delivery"] == 2
    [woken] = await history(nc, scope, run_id, "woken")
    assert isinstance(woken, StepWoken) and woken.index == 0 and woken.kind is WaitKind.SLEEP
    until = wait.conditions[0].until
    assert until is not None and dt.datetime.fromisoformat(woken.at) >= dt.datetime.fromisoformat(
        until
    )
    first, again = await tasks_of(nc, scope, "Nap", "Nap")
    assert (first.wakes, again.wakes) == ((), (woken,))
    assert again.delivery_offset == 1 and again.attempt == first.attempt == 1


async def test_an_event_or_a_sleep_wakes_a_step_whichever_comes_first_in_its_namespace(
    nats_server: NatsServer, nc: NATS, engine: Engine, tenant_name: str
) -> None:
    scope = Scope(tenant_name)
    hatchet = hatchet_for(nats_server, tenant_name)
    neighbour = hatchet_for(nats_server, tenant_name, namespace="other")

    @hatchet.durable_task(name="Approve", execution_timeout=30)
    async def approve(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return await ctx.aio_wait_for(
            "approval",
            or_(
                SleepCondition(ctx.workflow_input()["patience_s"]),
                UserEventCondition("order:*", "input.order_id == 7"),
            ),
        )

    async with running(hatchet.worker("approver", slots=2, workflows=[approve])):
        heard = await approve.aio_run_no_wait({"patience_s": 60})
        [_wait] = await waiting(nc, scope, heard.workflow_run_id)
        # Not this namespace's, not the order, not the key: none of them wakes it.
        await neighbour.event.aio_push("order:paid", {"order_id": 7, "from": "other"})
        await hatchet.event.aio_push("order:paid", {"order_id": 8})
        await hatchet.event.aio_push("invoice:paid", {"order_id": 7})
        await hatchet.event.aio_push("order:paid", {"order_id": 7, "from": "us"})
        by_event = await asyncio.wait_for(heard.aio_result(), 30)
        slept = await asyncio.wait_for(approve.aio_run({"patience_s": 1}), 30)
    hatchet.close()
    neighbour.close()
    assert by_event["condition"] == 1 and by_event["kind"] == "event"
    assert by_event["event_key"] == "order:paid"
    assert by_event["payload"] == {"order_id": 7, "from": "us"}
    assert slept == {"condition": 0, "kind": "sleep"}
    assert len(await history(nc, scope, heard.workflow_run_id, "woken")) == 1


WAITER = """
import sys

from worker import Context, Hatchet

hatchet = Hatchet()


@hatchet.durable_task(name="Wait", execution_timeout=30)
async def wait(input: dict, ctx: Context) -> dict:
    ctx.log(f"delivery {ctx.delivery} on {sys.argv[1]}")
    woke = await ctx.aio_wait_for_event("go", "input.n == 1")
    return {"woke": woke["payload"], "worker": sys.argv[1]}


@hatchet.task(name="Quick")
async def quick(input: dict, ctx: Context) -> str:
    return sys.argv[1]


worker = hatchet.worker(sys.argv[1], max_runs=1)
worker.register_workflow(wait)
worker.register_workflow(quick)
worker.start()
"""


async def test_a_waiting_step_resumes_on_another_worker_after_its_worker_is_killed(
    nats_server: NatsServer, nc: NATS, engine: Engine, tenant_name: str, tmp_path: Path
) -> None:
    scope = Scope(tenant_name)
    hatchet = hatchet_for(nats_server, tenant_name)
    async with worker_process(nats_server, tenant_name, "first", tmp_path, WAITER) as first:

        async def registered() -> bool:
            for name in ("Wait", "Quick"):
                if not [r async for r in direct_history(nc, tenant_name, scope.workflow(name))]:
                    return False
            return True

        await eventually(registered, timeout_s=30)
        ref = await hatchet.admin.aio_run_workflow("Wait", {})
        [wait] = await waiting(nc, scope, ref.workflow_run_id)
        assert wait.worker_name == "first"
        # Its only slot is free while the step waits: it runs another step meanwhile.
        quick = await hatchet.admin.aio_run_workflow("Quick", {})
        assert await asyncio.wait_for(quick.aio_result(), 30) == {"Quick": "first"}
        first.kill()  # kill -9, while the step waits
        await first.wait()
    async with worker_process(nats_server, tenant_name, "second", tmp_path, WAITER):
        await hatchet.event.aio_push("go", {"n": 1})
        out = await asyncio.wait_for(ref.aio_result(), 60)
    hatchet.close()
    assert out["Wait"] == {"woke": {"n": 1}, "worker": "second"}


async def test_a_wait_that_can_never_end_fails_its_step_whoever_appends_it(
    nats_server: NatsServer, nc: NATS, engine: Engine, tenant_name: str
) -> None:
    scope = Scope(tenant_name)
    hatchet = hatchet_for(nats_server, tenant_name)
    started = asyncio.Event()
    release = asyncio.Event()

    @hatchet.durable_task(name="Bad", execution_timeout=30)
    async def bad(input: dict[str, Any], ctx: Context) -> None:
        await ctx.aio_wait_for_event("go", "input.n ==")  # the SDK refuses it

    @hatchet.durable_task(name="Held", execution_timeout=30)
    async def held(input: dict[str, Any], ctx: Context) -> None:
        started.set()
        await release.wait()

    async with running(hatchet.worker("w", slots=2, workflows=[bad, held])):
        with pytest.raises(WorkflowRunError, match="does not parse"):
            await asyncio.wait_for(bad.aio_run({}), 30)
        # A hand-made wait, past the SDK, for a step running elsewhere: no condition can
        # ever be met, so the dispatcher fails the step rather than wait forever.
        ref = await held.aio_run_no_wait({})
        await asyncio.wait_for(started.wait(), 30)
        run_id = ref.workflow_run_id
        never = WaitCondition(WaitKind.EVENT, event_key="go", expression="1 +")
        forged = StepWaiting(run_id, "Held", 1, 1, 0, (never,))
        await append(nc, Append(scope.run(run_id, "waiting"), encode(forged)))
        with pytest.raises(WorkflowRunError, match="DurableWaitError: condition 0: "):
            await asyncio.wait_for(ref.aio_result(), 30)
        release.set()
    hatchet.close()
