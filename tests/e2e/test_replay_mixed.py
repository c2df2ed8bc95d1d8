"""Issue 10: after a mixed workload (successes, failures with retries, an on-failure step,
an execution timeout, a schedule timeout, a cancellation, a worker killed with SIGKILL mid
step and its step redelivered, step logs) ``natchet replay --verify`` finds the rebuilt
read model identical to the live one; after one deliberate change of a Postgres row it
names exactly that row and column, and exits 1. Real NATS, Postgres, engine and workers
(the killed one a real process); the CLI as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any

import attrs
import psycopg

from dispatcher.decide import event_run_id
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope
from tests.conftest import eventually, running
from tests.e2e.test_cli_replay import natchet
from tests.support import alive, hatchet_for, run_ends, worker_process
from worker import Context, Hatchet

# The worker that is killed, and the one that takes over its step: the same workflow in a
# process of its own. Its step holds the first delivery (until the process is killed) and
# finishes a later one at once.
KILLABLE_WORKER = """
import asyncio
import sys

from worker import Context, Hatchet

hatchet = Hatchet()


@hatchet.workflow(name="Killable")
class Killable:
    @hatchet.step(timeout="60s")
    async def hold(self, context: Context) -> dict:
        context.log(f"delivery {context.delivery} on {sys.argv[1]}")
        if context.delivery == 1:
            await asyncio.sleep(60)
        return {"delivery": context.delivery}


worker = hatchet.worker(sys.argv[1], max_runs=1)
worker.register_workflow(Killable())
worker.start()
"""


@attrs.frozen
class Workload:
    """The runs of the mixed workload, by what happened to them."""

    diamonds: list[str]  # SUCCEEDED; step b failed its first attempt and was retried
    failed: str  # FAILED for good after a retry; its on-failure step ran
    timed_out: str  # FAILED: its steps ran past their execution timeout
    unscheduled: str  # FAILED: no worker took its step within the schedule timeout
    cancelled: str  # CANCELLED while its step ran
    killed: str  # SUCCEEDED on a second worker after the first was SIGKILLed mid step
    # Replays, once the runs above ended: a diamond whole, the failed run from ``pay`` (fails
    # again, ``reserve`` kept), and one the engine refuses (no such step: rejected).
    reruns: list[str] = attrs.Factory(list)

    @property
    def run_ids(self) -> list[str]:
        singles = [self.failed, self.timed_out, self.unscheduled, self.cancelled, self.killed]
        return [*self.diamonds, *singles, *self.reruns]


def mixed_workflows(hatchet: Hatchet, started: dict[str, threading.Event]) -> list[Any]:
    """The workflows the in-process worker runs (``started[name]``: that step began)."""

    @hatchet.workflow(on_events=["mixed:go"])
    class MixedDiamond:
        @hatchet.step()
        def a(self, context: Context) -> dict[str, Any]:
            return {"n": context.workflow_input()["n"]}

        @hatchet.step(parents=["a"], retries=2, backoff_factor=0.2)
        async def b(self, context: Context) -> dict[str, Any]:
            context.log(f"b attempt {context.attempt}")
            if context.attempt == 1:
                raise ConnectionError("flake in b")
            return {"b": context.step_output("a")["n"] * 2}

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> dict[str, Any]:
            context.log("c was here")
            context.log("c twice")
            return {"c": 3}

        @hatchet.step(parents=["b", "c"])
        def d(self, context: Context) -> dict[str, Any]:
            return {"d": context.step_output("b")["b"] + context.step_output("c")["c"]}

    @hatchet.workflow()
    class Doomed:
        @hatchet.step()
        def reserve(self, context: Context) -> dict[str, str]:
            return {"reservation": "r-1"}

        @hatchet.step(parents=["reserve"], retries=1, backoff_factor=0.1)
        def pay(self, context: Context) -> None:
            context.log(f"paying, attempt {context.attempt}")
            raise ValueError("payment provider down")

        @hatchet.on_failure_step()
        def release(self, context: Context) -> dict[str, Any]:
            return {"released_because": context.step_run_errors()}

    @hatchet.workflow()
    class TooSlow:
        @hatchet.step(timeout="0.3s")
        async def sleeps(self, context: Context) -> None:
            await asyncio.sleep(30)

        @hatchet.step(timeout="0.3s")
        def spins(self, context: Context) -> None:
            for _ in range(3000):  # a sync step polls context.cancelled to stop early
                if context.cancelled:
                    return
                threading.Event().wait(0.01)

    @hatchet.workflow()
    class LongJob:
        @hatchet.step(timeout="60s")
        async def crunch(self, context: Context) -> None:
            context.log("crunching")
            started["crunch"].set()
            await asyncio.sleep(60)

    return [MixedDiamond(), Doomed(), TooSlow(), LongJob()]


def orphan(hatchet: Hatchet) -> Any:
    """Registered by a worker that then leaves: its step is never picked up."""

    @hatchet.workflow(schedule_timeout="1s")
    class Orphan:
        @hatchet.step()
        def work(self, context: Context) -> None: ...

    return Orphan()


def killable_worker(
    server: NatsServer, tenant: str, name: str, tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """A worker process running ``Killable`` as ``name``."""
    return worker_process(server, tenant, name, tmp_path, KILLABLE_WORKER)


async def rows(db: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[Any]:
    cur = await db.execute(query, params)
    return list(await cur.fetchall())


async def kill_mid_step_and_redeliver(
    server: NatsServer, hatchet: Hatchet, db: psycopg.AsyncConnection[Any], tmp_path: Path
) -> str:
    """A run of ``Killable`` whose step the worker ``victim`` holds when it is SIGKILLed; the
    step comes back (after the queue's ack_wait) to ``rescuer``, which finishes it."""
    tenant = hatchet.settings.scope.tenant
    async with killable_worker(server, tenant, "victim", tmp_path) as victim:

        async def registered() -> bool:
            found = "SELECT 1 FROM workflows WHERE tenant = %s AND name = 'Killable'"
            return bool(await rows(db, found, tenant))

        await eventually(registered, timeout_s=30)
        ref = await hatchet.admin.aio_run_workflow("Killable", {"k": 1})
        run_id = ref.workflow_run_id

        async def holding() -> bool:
            # The step runs (it logged, and sleeps) and its assignment is in the log (the
            # worker appends it once the step has run for a moment).
            logged = "SELECT 1 FROM step_logs WHERE tenant = %s AND run_id = %s AND line = %s"
            held = "SELECT status FROM attempts WHERE tenant = %s AND run_id = %s"
            held += " AND worker_name = 'victim'"
            return bool(await rows(db, logged, tenant, run_id, "delivery 1 on victim")) and (
                await rows(db, held, tenant, run_id)
            ) == [("RUNNING",)]

        await eventually(holding, timeout_s=30)
        victim.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(victim.wait(), 10) == -signal.SIGKILL
        assert not alive(victim.pid)
    async with killable_worker(server, tenant, "rescuer", tmp_path) as rescuer:
        assert await asyncio.wait_for(ref.result(), 30) == {"hold": {"delivery": 2}}
    assert rescuer.returncode == 0
    return run_id


async def mixed_workload(
    server: NatsServer, db: psycopg.AsyncConnection[Any], tenant: str, tmp_path: Path
) -> Workload:
    """Every kind of run the replay must fold alike, on ``tenant``; returns once each run
    is terminal in Postgres and no attempt is left RUNNING (the workers are stopped)."""
    hatchet = hatchet_for(server, tenant)
    registrar = hatchet.worker("registrar", max_runs=1)
    registrar.register_workflow(orphan(hatchet))
    async with running(registrar):
        pass  # registers Orphan, then leaves: nobody will take its step
    started = {"crunch": threading.Event()}
    steady = hatchet.worker("steady", max_runs=8)
    for workflow in mixed_workflows(hatchet, started):
        steady.register_workflow(workflow)
    async with running(steady):
        killed = asyncio.create_task(kill_mid_step_and_redeliver(server, hatchet, db, tmp_path))
        try:
            pushed = await hatchet.event.aio_push("mixed:go", {"n": 1})
            diamonds = [
                event_run_id(Scope(tenant), int(pushed.event_id), "MixedDiamond"),
                (await hatchet.admin.aio_run_workflow("MixedDiamond", {"n": 2})).workflow_run_id,
            ]
            failed = await hatchet.admin.aio_run_workflow("Doomed", {})
            timed_out = await hatchet.admin.aio_run_workflow("TooSlow", {})
            unscheduled = await hatchet.admin.aio_run_workflow("Orphan", {})
            cancelled = await hatchet.admin.aio_run_workflow("LongJob", {})
            await eventually(started["crunch"].is_set)
            await hatchet.admin.aio_cancel(cancelled.workflow_run_id, reason="user asked")
            workload = Workload(
                diamonds=diamonds,
                failed=failed.workflow_run_id,
                timed_out=timed_out.workflow_run_id,
                unscheduled=unscheduled.workflow_run_id,
                cancelled=cancelled.workflow_run_id,
                killed=await killed,
            )
        finally:
            if not killed.done():  # something above failed: stop the worker processes
                killed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await killed
        for run_id in workload.run_ids:
            await run_ends(db, run_id, tenant=tenant, timeout_s=30)
        # Re-runs, now that the runs above have ended: new history linked to them.
        for run_id, from_step in (
            (workload.diamonds[0], None),
            (workload.failed, "pay"),
            (workload.failed, "no-such-step"),
        ):
            ref = await hatchet.admin.aio_replay(run_id, from_step=from_step)
            workload.reruns.append(ref.workflow_run_id)
        for run_id in workload.reruns:
            await run_ends(db, run_id, tenant=tenant, timeout_s=30)

        async def attempts_settled() -> bool:
            query = "SELECT count(*) FROM attempts WHERE tenant = %s AND status = 'RUNNING'"
            return (await rows(db, query, tenant)) == [(0,)]

        await eventually(attempts_settled)
    hatchet.close()
    return workload


async def check_workload(db: psycopg.AsyncConnection[Any], tenant: str, w: Workload) -> None:
    """The read model holds what each kind of run is about (else the verify proves less)."""

    async def status(run_id: str) -> str:
        [(found,)] = await rows(
            db, "SELECT status FROM runs WHERE tenant = %s AND id = %s", tenant, run_id
        )
        return str(found)

    async def attempts(run_id: str, step: str) -> list[tuple[Any, ...]]:
        return await rows(
            db,
            "SELECT attempt, delivery, worker_name, status, error FROM attempts"
            " WHERE tenant = %s AND run_id = %s AND step = %s ORDER BY attempt, delivery",
            tenant,
            run_id,
            step,
        )

    for run_id in w.diamonds:
        assert await status(run_id) == "SUCCEEDED"
        assert [a[:4] for a in await attempts(run_id, "b")] == [
            (1, 1, "steady", "FAILED"),
            (2, 1, "steady", "SUCCEEDED"),
        ]
    assert await status(w.failed) == "FAILED"
    assert [a[3] for a in await attempts(w.failed, "pay")] == ["FAILED", "FAILED"]
    assert [a[3] for a in await attempts(w.failed, "release")] == ["SUCCEEDED"]
    assert await status(w.timed_out) == "FAILED"
    timed = [a[4] for step in ("sleeps", "spins") for a in await attempts(w.timed_out, step)]
    assert any("timed out after 0.3s" in (e or "") for e in timed), timed
    assert await status(w.unscheduled) == "FAILED"
    [(error,)] = await rows(
        db, "SELECT error FROM steps WHERE tenant = %s AND run_id = %s", tenant, w.unscheduled
    )
    assert "schedule_timeout" in error
    assert await status(w.cancelled) == "CANCELLED"
    [crunch] = await attempts(w.cancelled, "crunch")
    # The worker's report (FAILED, "cancelled: ...") comes after the run's end, and wins.
    assert crunch[:4] == (1, 1, "steady", "FAILED") and "run ended" in crunch[4], crunch
    assert await status(w.killed) == "SUCCEEDED"
    assert [a[:4] for a in await attempts(w.killed, "hold")] == [
        (1, 1, "victim", "LOST"),
        (1, 2, "rescuer", "SUCCEEDED"),
    ]
    whole, from_pay, refused = w.reruns
    assert await status(whole) == "SUCCEEDED"
    assert [a[3] for a in await attempts(whole, "b")] == ["FAILED", "SUCCEEDED"]
    assert await status(from_pay) == "FAILED"
    assert await attempts(from_pay, "reserve") == []  # kept from the original
    assert [a[3] for a in await attempts(from_pay, "pay")] == ["FAILED", "FAILED"]
    assert [a[3] for a in await attempts(from_pay, "release")] == ["SUCCEEDED"]
    assert await status(refused) == "FAILED"
    [(logs,)] = await rows(db, "SELECT count(*) FROM step_logs WHERE tenant = %s", tenant)
    # b and c twice a diamond; pay twice; crunch; hold twice; the replays: a diamond's, and
    # pay twice.
    assert logs == 2 * 4 + 2 + 1 + 2 + 4 + 2


def parsed(out: str) -> tuple[list[str], str]:
    """``replay --verify``'s output: its difference lines, and its closing count. Every line
    but what it replayed, what it caught up on and that count is a difference."""
    *lines, summary = out.rstrip().splitlines()
    said = ("replayed ", "the live projector applied ")
    return [line for line in lines if not line.startswith(said)], summary


async def test_replay_verify_after_a_mixed_workload_then_exactly_the_changed_row(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    dsn: str,
    tenant_name: str,
    tmp_path: Path,
) -> None:
    workload = await mixed_workload(nats_server, db, tenant_name, tmp_path)
    end = await engine.projectors[tenant_name].wait_caught_up(timeout_s=30)
    await check_workload(db, tenant_name, workload)

    verify = ("replay", "--verify", "--tenant", tenant_name)
    code, out, err = await natchet(tmp_path, nats_server, dsn, *verify)
    assert f"replayed {tenant_name}: log sequences 1..{end} " in out, (out, err)
    differences, summary = parsed(out)
    assert differences == [], out
    assert summary.endswith("with the rebuild: 0 differences"), out
    assert code == 0, (out, err)

    # One attempt's worker, changed in Postgres: exactly that row and column, and exit 1.
    changed = "UPDATE attempts SET worker_name = 'impostor' WHERE tenant = %s AND run_id = %s"
    changed += " AND step = 'hold' AND attempt = 1 AND delivery = 2"
    cur = await db.execute(changed, (tenant_name, workload.killed))
    assert cur.rowcount == 1
    code, out, err = await natchet(tmp_path, nats_server, dsn, *verify)
    differences, summary = parsed(out)
    assert differences == [
        f"attempts (tenant={tenant_name}, run_id={workload.killed}, step=hold, attempt=1,"
        " delivery=2) worker_name: live 'impostor', rebuilt 'rescuer'"
    ], out
    assert summary.endswith("with the rebuild: 1 difference"), out
    assert code == 1, (out, err)
