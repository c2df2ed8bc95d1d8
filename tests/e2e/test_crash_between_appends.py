"""The dispatcher killed between any two appends of a decision, on a real JetStream: the
next dispatcher rebuilds from the log, finishes the decision, and every message of it is
in the log exactly once (the pure version, over every decision of random histories, is
tests/property/test_crash_prefixes.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import pytest

from dispatcher import Dispatcher
from eventstore import Append, Appender, Connection, append, ensure_tenant_stream, replay
from schemas import RunRequested, Scope, StepAssigned, StepDef, StepResult, WorkflowDef, encode
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(120)

DIAMOND = WorkflowDef(
    name="wf",
    version="v1",
    steps=(StepDef("a"), StepDef("b", ("a",)), StepDef("c", ("a",)), StepDef("d", ("b", "c"))),
)


class Killed(Exception):
    """The dispatcher died here."""


class DiesAfter(Appender):
    """Sends the first ``n`` appends of its next batch, then dies (once)."""

    def __init__(self, conn: Connection, n: int) -> None:
        super().__init__(conn)
        self.n = n

    async def append_all(self, items: Sequence[Append]) -> list[int]:
        if self.n < 0:
            return await super().append_all(items)
        sent = await super().append_all(items[: self.n])
        self.n = -1
        if len(sent) < len(items):
            raise Killed(f"killed after {len(sent)} of {len(items)} appends")
        return sent


async def message_ids(nc: Connection, tenant: str) -> Counter[str]:
    """Every dedup id in the log, with how often it appears."""
    found: Counter[str] = Counter()
    async for record in replay(nc, tenant):
        msg_id = (record.headers or {}).get("Nats-Msg-Id")
        if msg_id:
            found[msg_id] += 1
    return found


async def decide_dying(nc: Connection, tenant: str, n: int) -> None:
    """A dispatcher that dies after ``n`` appends of its next decision (if it has more)."""
    dispatcher = Dispatcher(nc, tenant)
    dispatcher._appender = appender = DiesAfter(nc, n)
    task = asyncio.create_task(dispatcher.run())
    # Until its first batch of appends went out (cut or whole), or it stopped: a dispatcher
    # that never got to append fails here instead of passing without a cut.
    await eventually(lambda: task.done() or appender.n < 0)
    await dispatcher.shutdown()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, BaseException) and not isinstance(outcome, Killed):
        raise outcome


async def finished(nc: Connection, tenant: str, ids: Sequence[str]) -> bool:
    """A fresh dispatcher (the restart) has every one of ``ids`` in the log."""
    async with Dispatcher(nc, tenant) as dispatcher:
        await eventually(dispatcher.ready.is_set)

        async def all_in() -> bool:
            present = await message_ids(nc, tenant)
            return all(present[i] for i in ids)

        return await eventually(all_in)


async def report(nc: Connection, scope: Scope, run: str, step: str) -> None:
    await append(
        nc, Append(scope.run(run, "assigned"), encode(StepAssigned(run, step, 1, 1, "w", "w")))
    )
    result = StepResult(run, step, 1, 1, "w", ok=True, output={step: 1})
    await append(nc, Append(scope.run(run, "result"), encode(result), f"{run}:{step}:result"))


@pytest.mark.parametrize("kill_after", [1])
async def test_run_creation_cut_after_created(
    nc: Connection, tenant_name: str, kill_after: int
) -> None:
    """created is in the log, its first task is not: the next dispatcher offers it."""
    scope = Scope(tenant_name)
    await ensure_tenant_stream(nc, tenant_name)
    await append(nc, Append(scope.workflow("wf"), encode(DIAMOND), "workflow:default:wf:v1"))
    await append(nc, Append(scope.run("r1", "requested"), encode(RunRequested("r1", "wf", {}))))
    await decide_dying(nc, tenant_name, kill_after)
    assert await finished(nc, tenant_name, ["r1:created", "r1:a:1:task"])
    assert all(n == 1 for n in (await message_ids(nc, tenant_name)).values())


@pytest.mark.parametrize("kill_after", [1, 2])
async def test_a_verdict_and_the_steps_it_releases_cut_anywhere(
    nc: Connection, tenant_name: str, kill_after: int
) -> None:
    """a succeeds: its verdict, b's task, c's task. Killed after 1 or 2 of them, the next
    dispatcher appends exactly the rest, and the run goes on to the end."""
    scope = Scope(tenant_name)
    await ensure_tenant_stream(nc, tenant_name)
    await append(nc, Append(scope.workflow("wf"), encode(DIAMOND), "workflow:default:wf:v1"))
    await append(nc, Append(scope.run("r1", "requested"), encode(RunRequested("r1", "wf", {}))))
    assert await finished(nc, tenant_name, ["r1:created", "r1:a:1:task"])
    await report(nc, scope, "r1", "a")
    await decide_dying(nc, tenant_name, kill_after)
    assert await finished(nc, tenant_name, ["r1:a:finished", "r1:b:1:task", "r1:c:1:task"])
    for step in ("b", "c"):
        await report(nc, scope, "r1", step)
    await decide_dying(nc, tenant_name, 0 if kill_after == 1 else 10)  # killed before d's task
    assert await finished(nc, tenant_name, ["r1:d:1:task"])
    await report(nc, scope, "r1", "d")
    # d's verdict rides in the run's end: one message, so there is nothing to cut.
    await decide_dying(nc, tenant_name, 1)
    assert await finished(nc, tenant_name, ["r1:finished"])
    counts = await message_ids(nc, tenant_name)
    assert "r1:d:finished" not in counts
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
