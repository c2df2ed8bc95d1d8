"""Starting runs directly, awaiting results, and the failure paths of a run."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import running
from tests.support import hatchet_for, run_ends
from worker import Context, WorkflowRunError


async def test_run_workflow_result_is_awaitable(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Adder:
        @hatchet.step()
        def add(self, context: Context) -> dict[str, int]:
            data = context.workflow_input()
            return {"sum": data["a"] + data["b"]}

    worker = hatchet.worker("adder", max_runs=2)
    worker.register_workflow(Adder())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Adder", {"a": 2, "b": 3})
        assert await ref.result() == {"add": {"sum": 5}}
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert run["status"] == "SUCCEEDED"
    assert run["triggered_by"] is None


async def test_failing_step_fails_the_run_with_its_error(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Broken:
        @hatchet.step()
        def boom(self, context: Context) -> None:
            raise ValueError("no such customer")

        @hatchet.step(parents=["boom"])
        def never(self, context: Context) -> None:
            raise AssertionError("a child of a failed step ran")

    worker = hatchet.worker("broken", max_runs=1)
    worker.register_workflow(Broken())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Broken", {})
        with pytest.raises(WorkflowRunError, match="no such customer"):
            await ref.result()
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    steps = {s["name"]: s for s in run["steps"]}
    assert run["status"] == "FAILED"
    assert "ValueError: no such customer" in run["error"]
    assert steps["boom"]["status"] == "FAILED"
    assert steps["boom"]["attempts"][0]["error"] == "ValueError: no such customer"
    assert steps["never"]["attempts"] == []


async def test_step_returning_non_json_fails_clearly(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Unserializable:
        @hatchet.step()
        def bad(self, context: Context) -> object:
            return {"when": object()}

    worker = hatchet.worker("unserializable", max_runs=1)
    worker.register_workflow(Unserializable())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Unserializable", {})
        run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert run["status"] == "FAILED"
    assert "not JSON-serializable" in run["steps"][0]["error"]


async def test_unknown_workflow_is_rejected(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    ref = await hatchet.admin.aio_run_workflow("NoSuchWorkflow", {"x": 1})
    with pytest.raises(WorkflowRunError, match="no worker has registered workflow"):
        await ref.result()
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert run["status"] == "FAILED"
    assert "NoSuchWorkflow" in run["error"]
