"""Defect 2 of issue 8: a decision whose atomic batch the server refuses because one of its
dedup ids is already in the log (made earlier, by another input) used to be taken as "all
of it is in the log": its other messages were folded into state but never appended. Now
each of its messages lands exactly once."""

from __future__ import annotations

from dispatcher import Dispatcher
from eventstore import Append, Connection, append, direct_last, ensure_tenant_stream
from schemas import RunRequested, Scope, StepDef, StepQueued, WorkflowDef, encode
from tests.conftest import eventually


async def test_a_partly_logged_decision_lands_whole(nc: Connection, tenant_name: str) -> None:
    scope = Scope(tenant_name)
    await ensure_tenant_stream(nc, tenant_name)
    wf = WorkflowDef(name="wf", version="v1", steps=(StepDef("a"),))
    await append(nc, Append(scope.workflow("wf"), encode(wf), "workflow:default:wf:v1"))
    # Part of what the dispatcher will decide for r1 is in the log already, with its id.
    early = StepQueued(run_id="r1", step="a", attempt=1, queued_at="2026-01-01T00:00:00+00:00")
    await append(nc, Append(scope.run("r1", "queued"), encode(early), "r1:a:1:queued"))
    await append(nc, Append(scope.run("r1", "requested"), encode(RunRequested("r1", "wf", {}))))
    async with Dispatcher(nc, tenant_name):

        async def created_and_offered() -> bool:
            created = await direct_last(nc, tenant_name, scope.run("r1", "created"))
            task = await direct_last(nc, tenant_name, scope.task("wf", "a"))
            return created is not None and task is not None

        await eventually(created_and_offered)
    queued = await direct_last(nc, tenant_name, scope.run("r1", "queued"))
    assert queued is not None and queued.data == encode(early)  # once: the earlier one
