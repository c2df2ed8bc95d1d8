"""Hatchet's v1 API end to end, on real NATS and Postgres: a DAG of tasks over a Pydantic
input, a standalone task, input validated on both sides, and a worker made with
``hatchet.worker(name, slots=..., workflows=[...])``."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends, runs_of
from worker import (
    Context,
    EmptyModel,
    Hatchet,
    InvalidInputError,
    NonRetryableError,
    Workflow,
    WorkflowRunError,
)


class Order(BaseModel):
    sku: str
    qty: int


class Priced(BaseModel):
    sku: str
    total: float


def order_flow(hatchet: Hatchet) -> Workflow:
    wf = hatchet.workflow(name="Order", on_events=["order:placed"], input_validator=Order)

    @wf.task(retries=2)
    def price(input: Order, ctx: Context) -> Priced:
        return Priced(sku=input.sku, total=input.qty * 2.5)

    @wf.task(parents=[price])
    async def confirm(input: Order, ctx: Context) -> dict[str, Any]:
        priced = ctx.parent_output(price)
        assert isinstance(priced, Priced)
        return {"message": f"{input.qty} x {priced.sku} = {priced.total}"}

    return wf


async def test_v1_dag_runs_with_parent_output(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = order_flow(hatchet)
    worker = hatchet.worker("v1-worker", slots=2, workflows=[wf])
    assert worker.max_runs == 2
    async with running(worker):
        result = await wf.aio_run(Order(sku="tea", qty=4))
        ref = await wf.aio_run_no_wait({"sku": "cake", "qty": 1})
        later = await ref.aio_result()
    hatchet.close()
    assert result == {
        "price": {"sku": "tea", "total": 10.0},
        "confirm": {"message": "4 x tea = 10.0"},
    }
    assert later["confirm"] == {"message": "1 x cake = 2.5"}
    run = await run_ends(db, ref.workflow_run_id)
    assert run["status"] == "SUCCEEDED"
    assert run["workflow"] == "Order"
    assert run["input"] == {"sku": "cake", "qty": 1}
    assert run["workflow_version"] == wf.definition.version


async def test_standalone_task_run_returns_its_output(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.task(input_validator=Order)
    def invoice(input: Order, ctx: Context) -> Priced:
        return Priced(sku=input.sku, total=input.qty * 1.5)

    @hatchet.task()
    async def hello(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {"hello": input.model_dump()}

    worker = hatchet.worker("standalone", slots=2, workflows=[invoice, hello])
    async with running(worker):
        # run() blocks until the run ends: from a thread, as the worker shares this loop.
        priced = await asyncio.to_thread(invoice.run, {"sku": "pen", "qty": 2})
        greeted = await hello.aio_run({"name": "ada"})
        ref = await hello.aio_run_no_wait()
        empty = await ref.aio_result()
    hatchet.close()
    assert priced == Priced(sku="pen", total=3.0)
    assert greeted == {"hello": {"name": "ada"}}
    assert empty == {"hello": {}}
    assert (await run_ends(db, ref.workflow_run_id))["workflow"] == "hello"


async def test_invalid_input_is_refused_by_the_client_and_fails_the_step_on_the_worker(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = order_flow(hatchet)
    async with running(hatchet.worker("v1-worker", slots=1, workflows=[wf])):
        with pytest.raises(InvalidInputError, match="input does not match Order: qty: "):
            await wf.aio_run({"sku": "tea", "qty": "lots"})
        # An event is not checked by any client: the worker refuses it before the step.
        await hatchet.event.aio_push("order:placed", {"sku": "tea", "qty": "lots"})

        async def one_run() -> list[dict[str, Any]]:
            return await runs_of(db, tenant_name)

        [bad] = await eventually(one_run)
        bad = await run_ends(db, bad["id"])
        # The worker still serves.
        assert (await wf.aio_run({"sku": "tea", "qty": 1}))["price"]["total"] == 2.5
    hatchet.close()
    assert bad["status"] == "FAILED"
    step = {s["name"]: s for s in bad["steps"]}["price"]
    [attempt] = step["attempts"]  # non-retryable: none of its 2 retries spent
    assert attempt["error"].startswith("NonRetryableError: input does not match Order: qty: ")
    assert "\n" not in attempt["error"]

    # The client refused the first one before sending: two runs in all, not three.
    # The good run's result comes from the log; its row may land a moment later.
    async def both_runs() -> list[dict[str, Any]]:
        rows = await runs_of(db, tenant_name)
        return rows if len(rows) >= 2 else []

    assert len(await eventually(both_runs)) == 2


async def test_v0_and_v1_workers_of_one_workflow_register_one_version(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow(name="Echo", on_events=["echo"])
    class Echo:
        @hatchet.step(retries=1)
        def say(self, context: Context) -> Any:
            return {"said": context.workflow_input()["word"], "by": "v0"}

    wf = hatchet.workflow(name="Echo", on_events=["echo"])

    @wf.task(retries=1)
    def say(input: EmptyModel, ctx: Context) -> Any:
        return {"said": input.model_dump()["word"], "by": "v1"}

    v0 = hatchet.worker("v0", max_runs=1)
    v0.register_workflow(Echo())
    v1 = hatchet.worker("v1", slots=1, workflows=[wf])
    async with running(v0), running(v1):
        by_v1 = await wf.aio_run({"word": "hi"})
        ref = await hatchet.admin.aio_run_workflow("Echo", {"word": "ho"})
        by_either = await ref.result()
    hatchet.close()
    assert by_v1["say"]["said"] == "hi" and by_either["say"]["said"] == "ho"
    cur = await db.execute(
        "SELECT DISTINCT version FROM workflows WHERE tenant = %s AND name = 'Echo'",
        (tenant_name,),
    )
    assert await cur.fetchall() == [(wf.definition.version,)]


async def test_v1_on_failure_task_runs_when_a_task_fails(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Charge", input_validator=Order)

    @wf.task()
    def charge(input: Order, ctx: Context) -> None:
        raise NonRetryableError(f"card declined for {input.sku}")

    @wf.on_failure_task()
    def refund(input: Order, ctx: Context) -> dict[str, Any]:
        return {"errors": ctx.step_run_errors(), "qty": input.qty}

    async with running(hatchet.worker("v1-worker", slots=1, workflows=[wf])):
        ref = await wf.aio_run_no_wait({"sku": "tea", "qty": 3})
        with pytest.raises(WorkflowRunError, match="card declined for tea"):
            await ref.aio_result()
        run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert run["status"] == "FAILED"
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["refund"]["output"] == {
        "errors": {"charge": "NonRetryableError: card declined for tea"},
        "qty": 3,
    }
