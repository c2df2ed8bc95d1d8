"""Retries, timeouts, on-failure steps, cancellation and graceful shutdown, end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from typing import Any

import psycopg
import pytest

from eventstore import replay
from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet, NonRetryableError, WorkflowRunError


async def log_kinds(nats_server: NatsServer, tenant: str, run_id: str) -> list[str]:
    """The kinds of a run's messages, in log order (the audit trail); its tasks (each one
    the step queued) show as ``task``."""
    import eventstore
    from schemas.codec import decode_as
    from schemas.messages import Task

    nc = await eventstore.connect(eventstore.NatsOptions(nats_server.url))
    try:
        kinds = []
        subjects = [f"{tenant}.*.runs.{run_id}.>", f"{tenant}.*.tasks.>"]
        async for r in replay(nc, tenant, subjects):
            if ".tasks." in r.subject:
                if decode_as(Task, Task.KIND, r.data).run_id == run_id:
                    kinds.append("task")
            else:
                kinds.append(r.subject.rsplit(".", 1)[-1])
        return kinds
    finally:
        await nc.close()


def flaky(hatchet: Hatchet, fail_times: int, **step: Any) -> Any:
    calls = {"n": 0}

    @hatchet.workflow(name="Flaky")
    class Flaky:
        @hatchet.step(**step)
        def unreliable(self, context: Context) -> dict[str, int]:
            calls["n"] += 1
            if calls["n"] <= fail_times:
                raise ConnectionError(f"flake {calls['n']}")
            return {"attempt": context.attempt}

    return Flaky()


async def test_retries_with_backoff_then_success(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("flaky", max_runs=1)
    worker.register_workflow(flaky(hatchet, 2, retries=3, backoff_factor=1.5))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Flaky", {})
        assert await ref.result() == {"unreliable": {"attempt": 3}}
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    attempts = run["steps"][0]["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "SUCCEEDED"),
    ]
    assert attempts[0]["error"] == "ConnectionError: flake 1"
    # backoff: 1.5 ** 1 s before attempt 2, 1.5 ** 2 s before attempt 3
    gaps = [
        (
            dt.datetime.fromisoformat(b["started_at"]) - dt.datetime.fromisoformat(a["finished_at"])
        ).total_seconds()
        for a, b in itertools.pairwise(attempts)
    ]
    assert gaps[0] >= 1.4 and gaps[1] >= 2.2, gaps
    kinds = await log_kinds(nats_server, tenant_name, ref.workflow_run_id)
    assert kinds.count("retry_scheduled") == 2 and kinds.count("task") == 3


async def test_backoff_survives_an_engine_restart_without_doubling(
    nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,))
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("flaky", max_runs=1)
    worker.register_workflow(flaky(hatchet, 1, retries=2, backoff_factor=3.0))
    engine = Engine(settings)
    await engine.start()
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Flaky", {})

        async def backoff_started() -> bool:
            return "retry_scheduled" in await log_kinds(
                nats_server, tenant_name, ref.workflow_run_id
            )

        await eventually(backoff_started)
        await engine.shutdown()  # the engine is down for part of the 3 s backoff
        async with Engine(settings):
            assert await ref.result() == {"unreliable": {"attempt": 2}}
    hatchet.close()
    kinds = await log_kinds(nats_server, tenant_name, ref.workflow_run_id)
    assert kinds.count("task") == 2  # attempt 1 and one retry: none lost, none doubled
    assert kinds.count("finished") == 1


async def test_non_retryable_error_fails_at_once(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Refuses:
        @hatchet.step(retries=5)
        def charge(self, context: Context) -> None:
            raise NonRetryableError("card declined")

    worker = hatchet.worker("refuses", max_runs=1)
    worker.register_workflow(Refuses())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Refuses", {})
        with pytest.raises(WorkflowRunError, match="card declined"):
            await ref.result()
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert len(run["steps"][0]["attempts"]) == 1


async def test_step_timeout_fails_the_attempt(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    seen_cancel = threading.Event()

    @hatchet.workflow()
    class Slow:
        @hatchet.step(timeout="0.3s")
        async def too_slow(self, context: Context) -> None:
            await asyncio.sleep(30)

        @hatchet.step(timeout="0.3s")
        def too_slow_sync(self, context: Context) -> None:
            for _ in range(300):  # a sync step polls context.cancelled to stop early
                if context.cancelled:
                    seen_cancel.set()
                    return
                threading.Event().wait(0.01)

    worker = hatchet.worker("slow", max_runs=2)
    worker.register_workflow(Slow())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Slow", {})
        run = await run_ends(db, ref.workflow_run_id)
        await eventually(seen_cancel.is_set)
    hatchet.close()
    assert run["status"] == "FAILED"
    errors = {s["name"]: s["attempts"][0]["error"] for s in run["steps"] if s["attempts"]}
    assert any("timed out after 0.3s" in e for e in errors.values()), errors


async def test_step_nobody_picks_up_fails_after_schedule_timeout(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow(schedule_timeout="1s")
    class Orphan:
        @hatchet.step()
        def work(self, context: Context) -> None: ...

    worker = hatchet.worker("gone", max_runs=1)
    worker.register_workflow(Orphan())
    async with running(worker):
        pass  # registers the workflow, then leaves
    ref = await hatchet.admin.aio_run_workflow("Orphan", {})
    run = await run_ends(db, ref.workflow_run_id, timeout_s=15)
    hatchet.close()
    assert run["status"] == "FAILED"
    assert "not picked up by any worker within 1s (schedule_timeout)" in run["steps"][0]["error"]


async def test_on_failure_step_reads_the_errors(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)

    @hatchet.workflow()
    class Compensates:
        @hatchet.step()
        def reserve(self, context: Context) -> dict[str, str]:
            return {"reservation": "r-1"}

        @hatchet.step(parents=["reserve"])
        def pay(self, context: Context) -> None:
            raise ValueError("payment provider down")

        @hatchet.on_failure_step()
        def release(self, context: Context) -> dict[str, Any]:
            return {"released_because": context.step_run_errors()}

    worker = hatchet.worker("compensates", max_runs=2)
    worker.register_workflow(Compensates())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Compensates", {})
        run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    steps = {s["name"]: s for s in run["steps"]}
    assert run["status"] == "FAILED"
    assert "payment provider down" in run["error"]
    assert steps["release"]["status"] == "SUCCEEDED"
    assert steps["release"]["output"] == {
        "released_because": {"pay": "ValueError: payment provider down"}
    }


async def test_cancel_stops_running_async_and_sync_steps(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    started = {"async": asyncio.Event(), "sync": threading.Event()}
    got = {"async_cancelled": False, "sync_saw_flag": threading.Event()}

    @hatchet.workflow()
    class LongJob:
        @hatchet.step(timeout="60s")
        async def crunch(self, context: Context) -> None:
            started["async"].set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                got["async_cancelled"] = True
                raise

        @hatchet.step(timeout="60s")
        def grind(self, context: Context) -> None:
            started["sync"].set()
            while not context.exit_flag:
                threading.Event().wait(0.02)
            got["sync_saw_flag"].set()

    worker = hatchet.worker("long", max_runs=2)
    worker.register_workflow(LongJob())
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("LongJob", {})
        await asyncio.wait_for(started["async"].wait(), 20)
        await eventually(started["sync"].is_set)
        await hatchet.admin.aio_cancel(ref.workflow_run_id, reason="user asked")
        with pytest.raises(WorkflowRunError, match="CANCELLED"):
            await ref.result()
        await eventually(got["sync_saw_flag"].is_set)
        run = await run_ends(db, ref.workflow_run_id)

        async def attempts_settled() -> bool:
            fresh = await run_ends(db, ref.workflow_run_id)
            return all(a["status"] != "RUNNING" for s in fresh["steps"] for a in s["attempts"])

        await eventually(attempts_settled)
    hatchet.close()
    assert got["async_cancelled"]
    assert run["status"] == "CANCELLED" and run["error"] == "cancelled: user asked"
    assert {s["status"] for s in run["steps"]} == {"CANCELLED"}


async def test_graceful_shutdown_finishes_or_hands_back_running_steps(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    began = asyncio.Event()

    @hatchet.workflow()
    class Steady:
        @hatchet.step()
        async def quick(self, context: Context) -> str:
            began.set()
            await asyncio.sleep(0.5)
            return "done"

        @hatchet.step(parents=["quick"])
        async def slow(self, context: Context) -> str:
            began.set()
            await asyncio.sleep(2 if context.delivery > 1 else 60)
            return f"done on delivery {context.delivery}"

    first = hatchet.worker("first", max_runs=2, grace_seconds=1.5)
    first.register_workflow(Steady())
    async with running(first):
        ref = await hatchet.admin.aio_run_workflow("Steady", {})
        await asyncio.wait_for(began.wait(), 20)
        # quick finishes within the grace period; slow starts after it and cannot finish.
        await eventually(lambda: first.completed == 1 and first.slots.running == 1)
    assert first.handed_back == 1
    second = hatchet.worker("second", max_runs=2)
    second.register_workflow(Steady())
    async with running(second):
        assert await ref.result() == {"quick": "done", "slow": "done on delivery 2"}
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    slow = {s["name"]: s for s in run["steps"]}["slow"]
    assert [(a["worker_name"], a["status"]) for a in slow["attempts"]] == [
        ("first", "CANCELLED"),
        ("second", "SUCCEEDED"),
    ]
    assert "handed back" in slow["attempts"][0]["error"]


async def test_queued_task_of_a_cancelled_run_never_runs(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[Any] = []

    @hatchet.workflow()
    class Once:
        @hatchet.step()
        def work(self, context: Context) -> None:
            ran.append(context.workflow_input())

    worker = hatchet.worker("late", max_runs=1)
    worker.register_workflow(Once())
    async with running(worker):
        pass  # registers the workflow, then leaves: nobody takes the task below yet
    doomed = await hatchet.admin.aio_run_workflow("Once", {"n": "doomed"})
    await hatchet.admin.aio_cancel(doomed.workflow_run_id)
    assert (await run_ends(db, doomed.workflow_run_id))["status"] == "CANCELLED"
    late = hatchet.worker("late", max_runs=1)
    late.register_workflow(Once())
    async with running(late):
        # The queue is first in, first out: once the second run ran, the first task was seen.
        second = await hatchet.admin.aio_run_workflow("Once", {"n": "second"})
        await second.result()
    run = await run_ends(db, doomed.workflow_run_id)
    hatchet.close()
    assert ran == [{"n": "second"}]
    assert run["steps"][0]["attempts"] == []


async def test_a_worker_that_heard_the_cancel_drops_the_task_without_asking_the_log(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker listening to run ends since before a task was queued knows whether its run
    ended: a task of a run cancelled while it waited in the queue is dropped with no direct
    get of the run's end (``worker.ended``), and a task of a run going on runs, also
    without one."""
    import worker.ended
    import worker.intake

    asked: list[str] = []
    real_check = worker.intake.direct_last

    async def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[2])
        return await real_check(*args, **kwargs)

    monkeypatch.setattr(worker.intake, "direct_last", counted)
    # One host, one clock: no margin for clocks apart, so the first tasks count as fresh.
    monkeypatch.setattr(worker.ended, "MARGIN_S", 0.0)
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[Any] = []
    holding, gate = threading.Event(), threading.Event()

    @hatchet.workflow()
    class Gate:
        @hatchet.step()
        def hold(self, context: Context) -> None:
            holding.set()
            gate.wait(20)

    @hatchet.workflow()
    class Once:
        @hatchet.step()
        def work(self, context: Context) -> None:
            ran.append(context.workflow_input())

    busy = hatchet.worker("busy", max_runs=1)
    busy.register_workflow(Gate())
    busy.register_workflow(Once())
    async with running(busy):
        held = await hatchet.admin.aio_run_workflow("Gate", {})
        await eventually(holding.is_set)  # its one slot is taken: the next tasks wait
        doomed = await hatchet.admin.aio_run_workflow("Once", {"n": "doomed"})
        await hatchet.admin.aio_cancel(doomed.workflow_run_id)
        assert (await run_ends(db, doomed.workflow_run_id))["status"] == "CANCELLED"
        later = await hatchet.admin.aio_run_workflow("Once", {"n": "later"})
        gate.set()
        await held.result()
        await later.result()  # the queue is first in, first out: the doomed task was seen
        # Counted once the attempt has ended (acked), which can be after its run ended.
        await eventually(lambda: busy.completed == 2)
    run = await run_ends(db, doomed.workflow_run_id)
    hatchet.close()
    assert ran == [{"n": "later"}]
    assert run["steps"][0]["attempts"] == []
    assert asked == [], f"asked the log about {asked}"
