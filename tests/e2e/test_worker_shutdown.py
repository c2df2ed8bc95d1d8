"""A worker's shutdown, at its awkward moments: a result half written when the grace runs
out, a long drain watched by `natchet workers list`, a task fetched but not started yet, and
``run()`` cancelled outright."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

import worker
import worker.ended
import worker.execute
import worker.intake
from eventstore import latest
from natchet.cli.workers import DEAD_AFTER_S, worker_row
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import WorkerHeartbeat
from schemas.codec import decode_as
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet

WORKER_CODE = (Path(worker.__file__).parent, Path(worker.__file__).parent.parent / "eventstore")


def gated(hatchet: Hatchet, ran: list[int], gate: asyncio.Event | None = None) -> Any:
    """A one-step workflow ``Gated`` noting each delivery it runs, and waiting for ``gate``."""

    @hatchet.workflow(name="Gated")
    class Gated:
        @hatchet.step()
        async def work(self, context: Context) -> dict[str, bool]:
            ran.append(context.delivery)
            if gate is not None:
                await gate.wait()
            return {"ok": True}

    return Gated()


async def heartbeat_row(nc: NATS, tenant: str, worker_id: str) -> dict[str, Any]:
    """The worker's row as `natchet workers list` shows it now."""
    for rec in await latest(nc, tenant, f"{tenant}.*.workers.{worker_id}"):
        hb = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
        return worker_row(hb, rec.subject.split(".")[1], dt.datetime.now(dt.UTC))
    raise AssertionError(f"no heartbeat from worker {worker_id}")


def tasks_running_worker_code(since: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started after ``since`` whose coroutine is the worker's or the task puller's."""
    found = []
    for task in asyncio.all_tasks() - since:
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and Path(code.co_filename).parent in WORKER_CODE and not task.done():
            found.append(task)
    return found


async def test_a_result_being_written_when_the_grace_ends_is_kept(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 3: the drain's cancellation lands while the success result is being appended.
    The write and the ack finish anyway; the step is not run again by the next worker."""
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[int] = []
    reporting = asyncio.Event()
    real_append = worker.execute.append

    async def slow_result(conn: Any, item: Any, **kwargs: Any) -> int:
        if item.subject.endswith(".result") and not reporting.is_set():
            reporting.set()
            await asyncio.sleep(1.0)  # still writing when the 0.1 s grace runs out
        return await real_append(conn, item, **kwargs)

    monkeypatch.setattr(worker.execute, "append", slow_result)
    first = hatchet.worker("first", max_runs=1, grace_seconds=0.1)
    first.register_workflow(gated(hatchet, ran))
    async with running(first):
        ref = await hatchet.admin.aio_run_workflow("Gated", {})
        await asyncio.wait_for(reporting.wait(), 20)
    second = hatchet.worker("second", max_runs=1)
    second.register_workflow(gated(hatchet, ran))
    async with running(second):
        assert await asyncio.wait_for(ref.result(), 20) == {"work": {"ok": True}}
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    assert ran == [1], "the step ran again"
    attempts = run["steps"][0]["attempts"]
    assert [(a["worker_name"], a["status"]) for a in attempts] == [("first", "SUCCEEDED")]
    assert first.completed == 1 and first.handed_back == 0


async def test_a_draining_worker_keeps_beating_and_says_stopping(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str
) -> None:
    """Defect 4: while a step drains for longer than `natchet workers list` waits before it
    calls a silent worker DEAD, the worker keeps beating and shows STOPPING; STOPPED once
    it has stopped."""
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[int] = []
    release = asyncio.Event()
    drainer = hatchet.worker("drainer", max_runs=1, grace_seconds=60)
    drainer.register_workflow(gated(hatchet, ran, release))
    async with running(drainer):
        ref = await hatchet.admin.aio_run_workflow("Gated", {})
        await eventually(lambda: ran == [1])
        stopping = asyncio.create_task(drainer.shutdown())
        began = dt.datetime.now(dt.UTC)
        later = began + dt.timedelta(seconds=DEAD_AFTER_S + 1)

        async def beat_after_dead_line() -> dict[str, Any] | None:
            row = await heartbeat_row(nc, tenant_name, drainer.id)
            if dt.datetime.fromisoformat(row["last_heartbeat"]) < later:
                assert row["status"] == "STOPPING", row
                return None
            return row

        row = await eventually(beat_after_dead_line, timeout_s=DEAD_AFTER_S + 8)
        assert row["status"] == "STOPPING" and row["running"] == 1, row
        release.set()
        await asyncio.wait_for(stopping, 20)
    assert (await heartbeat_row(nc, tenant_name, drainer.id))["status"] == "STOPPED"
    assert await asyncio.wait_for(ref.result(), 20) == {"work": {"ok": True}}
    hatchet.close()


async def test_shutdown_waits_for_a_task_fetched_but_not_started(
    nats_server: NatsServer,
    engine: Engine,
    tenant_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 5: a task still being checked (is its run over?) when the shutdown begins is
    held like a running one: the shutdown waits for it, and it runs to its result."""
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[int] = []
    checking = asyncio.Event()
    real_check = worker.intake.direct_last

    async def slow_check(*args: Any, **kwargs: Any) -> Any:
        checking.set()
        await asyncio.sleep(2.0)  # the shutdown begins meanwhile
        return await real_check(*args, **kwargs)

    monkeypatch.setattr(worker.intake, "direct_last", slow_check)
    # Make it ask the log, as it does for a task it cannot vouch for (see worker.ended).
    monkeypatch.setattr(worker.ended.RunEnds, "over", lambda *_args: None)
    holder = hatchet.worker("holder", max_runs=1, grace_seconds=30)
    holder.register_workflow(gated(hatchet, ran))
    async with running(holder):
        ref = await hatchet.admin.aio_run_workflow("Gated", {})
        await asyncio.wait_for(checking.wait(), 20)
    assert holder.completed == 1, "the shutdown did not wait for the task it held"
    assert ran == [1]
    assert await asyncio.wait_for(ref.result(), 10) == {"work": {"ok": True}}
    hatchet.close()


async def test_cancelling_run_stops_everything_the_worker_started(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    """Defect 5: cancelling the task running ``async_start()`` leaves nothing running: no
    puller, no heartbeat, no step; the running step is handed back (another worker takes it
    at once), the last heartbeat says STOPPED, and the connection is closed."""
    hatchet = hatchet_for(nats_server, tenant_name)
    opened: list[NATS] = []
    connect = hatchet.connect

    async def recording(name: str, **kw: Any) -> NATS:
        conn = await connect(name, **kw)
        if name.startswith("natchet-worker:"):
            opened.append(conn)
        return conn

    hatchet.connect = recording  # type: ignore[method-assign]
    ran: list[int] = []
    never = asyncio.Event()
    before = asyncio.all_tasks()
    doomed = hatchet.worker("doomed", max_runs=2)
    doomed.register_workflow(gated(hatchet, ran, never))
    runner = asyncio.create_task(doomed.async_start())
    await asyncio.wait_for(doomed.ready.wait(), 20)
    ref = await hatchet.admin.aio_run_workflow("Gated", {})
    await eventually(lambda: ran == [1])
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 30)
    assert tasks_running_worker_code(before) == []
    assert len(opened) == 1 and opened[0].is_closed
    assert (await heartbeat_row(nc, tenant_name, doomed.id))["status"] == "STOPPED"

    never.set()
    second = hatchet.worker("second", max_runs=1)
    second.register_workflow(gated(hatchet, ran))
    async with running(second):
        assert await asyncio.wait_for(ref.result(), 4) == {"work": {"ok": True}}  # < ack_wait
    run = await run_ends(db, ref.workflow_run_id)
    hatchet.close()
    attempts = run["steps"][0]["attempts"]
    assert [(a["worker_name"], a["status"]) for a in attempts] == [
        ("doomed", "CANCELLED"),
        ("second", "SUCCEEDED"),
    ]
    assert "handed back" in attempts[0]["error"]


async def test_async_with_runs_the_worker_and_shutdown_is_idempotent(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    ran: list[int] = []
    early = hatchet.worker("early", max_runs=1)
    early.register_workflow(gated(hatchet, ran))
    await early.shutdown()  # before it ran: it will not run
    await early.run()
    assert not early.ready.is_set()

    plain = hatchet.worker("plain", max_runs=1)
    plain.register_workflow(gated(hatchet, ran))
    async with plain:
        assert plain.ready.is_set() and plain.running  # entered once it takes work
        ref = await hatchet.admin.aio_run_workflow("Gated", {})
        assert await asyncio.wait_for(ref.result(), 20) == {"work": {"ok": True}}
    assert not plain.running
    await plain.shutdown()
    await asyncio.gather(plain.shutdown(), plain.shutdown())
    with pytest.raises(RuntimeError, match="make a new one"):
        await plain.run()
    hatchet.close()
