"""When a worker appends ``assigned``: only for a step still running after a short grace
(``worker.execute.ASSIGN_GRACE_S``), or at once for a task close to its schedule deadline.
A fast step's result alone carries the assignment; the read model shows the same worker
and start either way."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import attrs
import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
import worker.execute
from eventstore import Delivery
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import Scope, StepAssigned, StepLog, StepResult, Task
from schemas.codec import decode_run_message
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet
from worker.execute import Attempt


def one_step(hatchet: Hatchet, name: str, gate: asyncio.Event | None = None) -> Any:
    """A one-step workflow whose step returns at once, or once ``gate`` is set."""

    @hatchet.workflow(name=name)
    class OneStep:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, int]:
            if gate is not None:
                await asyncio.wait_for(gate.wait(), 20)
            return {"delivery": context.delivery}

    return OneStep()


async def run_log(nc: NATS, tenant: str, run_id: str) -> list[tuple[str, Any]]:
    """The run's messages in the tenant log, in order: (kind, message)."""
    out = []
    async for rec in eventstore.replay(nc, tenant):
        parts = rec.subject.split(".")
        if parts[2] == "runs" and parts[3] == run_id:
            out.append((parts[4], decode_run_message(parts[4], rec.data)))
    return out


def kinds(log: list[tuple[str, Any]]) -> list[str]:
    return [kind for kind, _ in log]


def t(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


@pytest.fixture
def long_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grace no fast step outlasts on a busy machine: what these tests call fast is done
    within it for sure (the grace itself is only a cost trade-off)."""
    monkeypatch.setattr(worker.execute, "ASSIGN_GRACE_S", 2.0)


async def test_a_fast_step_leaves_its_result_alone_which_carries_the_assignment(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    long_grace: None,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    w = hatchet.worker("fast-worker", max_runs=2)
    w.register_workflow(one_step(hatchet, "Fast"))
    async with running(w):
        ref = await hatchet.admin.aio_run_workflow("Fast", {})
        run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()

    log = await run_log(nc, tenant_name, ref.workflow_run_id)
    # One message fewer than before: no ``assigned`` between the task and the result.
    # the step's verdict rides in the run's end
    assert kinds(log) == ["requested", "created", "result", "finished"]
    result = log[2][1]
    assert isinstance(result, StepResult) and result.ok
    assert (result.worker_id, result.worker_name) == (w.id, "fast-worker")
    assert result.started_at is not None and result.started_at <= result.finished_at

    assert run["status"] == "SUCCEEDED"
    started = t(result.started_at)
    assert t(run["started_at"]) == started
    [step] = run["steps"]
    assert (step["status"], t(step["started_at"])) == ("SUCCEEDED", started)
    [attempt] = step["attempts"]
    assert (attempt["worker_id"], attempt["worker_name"], attempt["status"]) == (
        w.id,
        "fast-worker",
        "SUCCEEDED",
    )
    assert t(attempt["started_at"]) == started
    assert t(attempt["finished_at"]) == t(result.finished_at)


async def test_a_slow_step_is_assigned_while_it_runs(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    """Still running after the grace: ``assigned`` is appended, so the read model shows the
    run and the attempt RUNNING before the step ends (the step ends only once it did)."""
    hatchet = hatchet_for(nats_server, tenant_name)
    gate = asyncio.Event()
    w = hatchet.worker("slow-worker", max_runs=1)
    w.register_workflow(one_step(hatchet, "Slow", gate))
    async with running(w):
        ref = await hatchet.admin.aio_run_workflow("Slow", {})

        async def shown_running() -> dict[str, Any] | None:
            run = await get_run(db, ref.workflow_run_id, tenant=tenant_name)
            if run is None or not run["steps"] or not run["steps"][0]["attempts"]:
                return None
            return run if run["steps"][0]["attempts"][0]["status"] == "RUNNING" else None

        running_run: dict[str, Any] = await eventually(shown_running)
        gate.set()
        run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()

    assert running_run["status"] == "RUNNING"
    [step] = running_run["steps"]
    assert step["status"] == "RUNNING"
    [attempt] = step["attempts"]
    assert (attempt["worker_name"], attempt["finished_at"]) == ("slow-worker", None)

    log = await run_log(nc, tenant_name, ref.workflow_run_id)
    assert kinds(log) == ["requested", "created", "assigned", "result", "finished"]
    assigned, result = log[2][1], log[3][1]
    assert isinstance(assigned, StepAssigned) and isinstance(result, StepResult)
    # Both say the same: who ran the attempt and when it started.
    assert (assigned.worker_id, assigned.worker_name, assigned.started_at) == (
        result.worker_id,
        result.worker_name,
        result.started_at,
    )
    [done] = run["steps"][0]["attempts"]
    assert t(done["started_at"]) == t(attempt["started_at"]) == t(assigned.started_at)
    assert (done["status"], done["worker_name"]) == ("SUCCEEDED", "slow-worker")


@attrs.define
class FakeMsg:
    """What a Delivery settles through; these tests only look at the log."""

    settled: list[str] = attrs.Factory(list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")

    async def in_progress(self) -> None:
        pass


async def attempt_log(
    nc: NATS, tenant: str, task: Task, fn: Any, *, delivered: int = 1
) -> tuple[list[tuple[str, Any]], FakeMsg]:
    """Run ``fn`` as one attempt of ``task`` (in ``tenant``'s default namespace) through
    :class:`worker.execute.Attempt`; the run's messages it appended, in order."""
    msg = FakeMsg()
    delivery = Delivery("t", b"", None, 1, delivered, None, "", 0, msg)  # type: ignore[arg-type]
    attempt = Attempt(
        nc,
        Scope(tenant),
        "w-id",
        "w-name",
        task,
        delivery,
        keepalive_s=10.0,
        max_msg_bytes=eventstore.max_message_bytes(nc),
        closing=asyncio.Event(),
    )
    await attempt.run(fn, None)
    return await run_log(nc, tenant, task.run_id), msg


def task_due_in(seconds: float | None) -> Task:
    now = dt.datetime.now(dt.UTC)
    deadline = None if seconds is None else (now + dt.timedelta(seconds=seconds)).isoformat()
    return Task(str(uuid.uuid4()), "wf", "s", 1, {}, {}, 10.0, schedule_deadline=deadline)


async def test_assigned_is_appended_at_once_when_the_schedule_deadline_is_near(
    nc: NATS, tenant_name: str, long_grace: None
) -> None:
    """The dispatcher fails a step nobody picked up by its schedule deadline: a task taken
    less than ``ASSIGN_AT_ONCE_S`` before it gets ``assigned`` before its step even starts,
    fast or not; one taken well before it (or with no deadline) does not."""
    await eventstore.ensure_tenant_stream(nc, tenant_name)
    seen: list[list[str]] = []

    async def fast(_: object, context: Context) -> dict[str, int]:
        return {"n": 1}

    for near in (0.5, -1.0):  # near, and past (a redelivery taken after it)
        task = task_due_in(near)

        async def peek(_: object, context: Context, task: Task = task) -> dict[str, int]:
            seen.append(kinds(await run_log(nc, tenant_name, task.run_id)))
            return {"n": 1}

        log, msg = await attempt_log(nc, tenant_name, task, peek, delivered=2)
        assert seen[-1] == ["assigned"], "assigned before the step started"
        assert kinds(log) == ["assigned", "result"] and msg.settled == ["ack"]
        assigned, result = log[0][1], log[1][1]
        assert (assigned.worker_name, assigned.started_at) == ("w-name", result.started_at)

    far: list[float | None] = [worker.execute.ASSIGN_AT_ONCE_S + 5, None]
    for due_in in far:
        log, _ = await attempt_log(nc, tenant_name, task_due_in(due_in), fast)
        assert kinds(log) == ["result"], due_in
        assert (log[0][1].worker_name, log[0][1].ok) == ("w-name", True)


async def test_the_grace_running_out_appends_assigned_before_the_result(
    nc: NATS, tenant_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step still running after the grace gets ``assigned`` (before its later log lines
    and its result); one that logs and ends within the grace gets none, its lines stay."""
    await eventstore.ensure_tenant_stream(nc, tenant_name)
    grace = worker.execute.ASSIGN_GRACE_S

    async def slow(_: object, context: Context) -> dict[str, int]:
        await asyncio.sleep(grace * 4)
        context.log("late line")
        return {"n": 1}

    log, _ = await attempt_log(nc, tenant_name, task_due_in(60), slow)
    assert kinds(log) == ["assigned", "log", "result"]
    assert log[0][1].started_at == log[2][1].started_at

    def quick(_: object, context: Context) -> dict[str, int]:  # sync, in a thread
        context.log("quick line")
        return {"n": 1}

    monkeypatch.setattr(worker.execute, "ASSIGN_GRACE_S", 2.0)  # quick beyond doubt
    log, _ = await attempt_log(nc, tenant_name, task_due_in(60), quick)
    assert kinds(log) == ["log", "result"]
    assert isinstance(log[0][1], StepLog) and log[1][1].started_at is not None


async def test_a_step_handed_back_within_the_grace_carries_its_assignment(
    nc: NATS, tenant_name: str, long_grace: None
) -> None:
    """Cancelled (the worker shuts down) before the grace ran out: the handed-back result
    alone, carrying the worker and the start."""
    await eventstore.ensure_tenant_stream(nc, tenant_name)
    started = asyncio.Event()

    async def stuck(_: object, context: Context) -> None:
        started.set()
        await asyncio.sleep(30)

    task = task_due_in(60)
    run = asyncio.create_task(attempt_log(nc, tenant_name, task, stuck))
    await started.wait()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert run.cancelled()
    log = await run_log(nc, tenant_name, task.run_id)
    assert kinds(log) == ["result"]
    result = log[0][1]
    assert result.handed_back and (result.worker_name, result.worker_id) == ("w-name", "w-id")
    assert result.started_at is not None


async def test_a_grace_running_out_as_the_step_ends_never_puts_assigned_after_the_result(
    nc: NATS, tenant_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grace runs out around the moment the step ends: ``assigned`` is appended before
    the result, or not at all."""
    await eventstore.ensure_tenant_stream(nc, tenant_name)

    async def instant(_: object, context: Context) -> dict[str, int]:
        return {"n": 1}

    def instant_sync(_: object, context: Context) -> dict[str, int]:
        return {"n": 1}

    seen = set()
    for i in range(24):
        monkeypatch.setattr(worker.execute, "ASSIGN_GRACE_S", (i % 4) * 0.0005)
        fn = instant if i % 2 else instant_sync
        log, _ = await attempt_log(nc, tenant_name, task_due_in(60), fn)
        seen.add(tuple(kinds(log)))
    assert seen <= {("result",), ("assigned", "result")}, seen
