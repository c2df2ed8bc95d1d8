"""Issue 14: the on-success step runs once after every step of the DAG succeeded, before
the run is SUCCEEDED, with every step's output; its failure fails the run (and the
on-failure step runs). v1 (``@wf.on_success_task()``) and v0 (``@hatchet.on_success_step()``)."""

from __future__ import annotations

from typing import Any

import psycopg

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet


def v1_flow(hatchet: Hatchet) -> Any:
    wf = hatchet.workflow(name="Shipped")

    @wf.task()
    def pack(input: Any, ctx: Context) -> dict[str, int]:
        return {"boxes": 2}

    @wf.task(parents=[pack])
    def ship(input: Any, ctx: Context) -> dict[str, str]:
        return {"carrier": "post"}

    @wf.on_success_task()
    def notify(input: Any, ctx: Context) -> dict[str, Any]:
        return {"told": ctx.task_output(ship)["carrier"], "boxes": ctx.task_output(pack)["boxes"]}

    @wf.on_failure_task()
    def alarm(input: Any, ctx: Context) -> dict[str, Any]:
        return {"errors": ctx.step_run_errors()}

    return wf


def v0_flow(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Grumpy")
    class Grumpy:
        @hatchet.step()
        def work(self, context: Context) -> int:
            return 1

        @hatchet.on_success_step()
        def complain(self, context: Context) -> None:
            raise RuntimeError("success is overrated")

        @hatchet.on_failure_step()
        def cleanup(self, context: Context) -> dict[str, str]:
            return context.step_run_errors()

    return Grumpy()


async def test_on_success_runs_after_the_dag_and_its_failure_fails_the_run(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("succ", slots=4, workflows=[v1_flow(hatchet), v0_flow(hatchet)])
    async with running(worker):
        good = await hatchet.admin.aio_run_workflow("Shipped", {})
        result = await good.aio_result()
        bad = await hatchet.admin.aio_run_workflow("Grumpy", {})
        run = await run_ends(db, good.workflow_run_id, tenant=tenant_name)
        grumpy = await run_ends(db, bad.workflow_run_id, tenant=tenant_name)
    hatchet.close()
    assert result["notify"] == {"told": "post", "boxes": 2}
    assert run["status"] == "SUCCEEDED"
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["notify"]["status"] == "SUCCEEDED" and steps["notify"]["parents"] == []
    assert steps["notify"]["on_success"] and not steps["ship"]["on_success"]
    assert steps["notify"]["queued_at"] >= steps["ship"]["finished_at"]
    assert run["finished_at"] >= steps["notify"]["finished_at"]
    assert steps["alarm"]["status"] == "CANCELLED"

    assert grumpy["status"] == "FAILED"
    assert "complain" in grumpy["error"] and "success is overrated" in grumpy["error"]
    gsteps = {s["name"]: s for s in grumpy["steps"]}
    assert gsteps["work"]["status"] == "SUCCEEDED"
    assert gsteps["complain"]["status"] == "FAILED"
    assert gsteps["cleanup"]["status"] == "SUCCEEDED"
    assert "success is overrated" in gsteps["cleanup"]["output"]["complain"]
