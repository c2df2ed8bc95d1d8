"""A decision part of which is in the log already (made before, by another input, or sent
before a crash) lands whole, each message exactly once: every output has a deterministic
dedup id, and the dispatcher appends them one by one (no atomic batch refused whole for one
duplicate, as it once was, losing the rest: defect 2 of issue 8)."""

from __future__ import annotations

from dispatcher import Dispatcher
from eventstore import Append, Connection, append, direct_history, direct_last, ensure_tenant_stream
from schemas import RunRequested, Scope, StepDef, Task, WorkflowDef, encode
from tests.conftest import eventually


async def test_a_partly_logged_decision_lands_whole(nc: Connection, tenant_name: str) -> None:
    scope = Scope(tenant_name)
    await ensure_tenant_stream(nc, tenant_name)
    wf = WorkflowDef(name="wf", version="v1", steps=(StepDef("a"),))
    await append(nc, Append(scope.workflow("wf"), encode(wf), "workflow:default:wf:v1"))
    # Part of what the dispatcher will decide for r1 is in the log already, with its id.
    early = Task("r1", "wf", "a", 1, {}, {}, 60.0, queued_at="2026-01-01T00:00:00+00:00")
    await append(nc, Append(scope.task("wf", "a"), encode(early), "r1:a:1:task"))
    await append(nc, Append(scope.run("r1", "requested"), encode(RunRequested("r1", "wf", {}))))
    async with Dispatcher(nc, tenant_name):

        async def created() -> bool:
            return await direct_last(nc, tenant_name, scope.run("r1", "created")) is not None

        await eventually(created)
    tasks = [r.data async for r in direct_history(nc, tenant_name, scope.task("wf", "a"))]
    assert tasks == [encode(early)]  # once: the earlier one
