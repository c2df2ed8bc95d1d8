"""Worker labels and sticky runs end to end, on real NATS and Postgres (issue 15): a step
requiring a label no live worker has waits (``runs get`` says why) and runs once such a
worker starts; weights prefer the better worker; ``upsert_labels`` makes a waiting step
runnable; HARD sticky keeps every step of a run on one worker; SOFT falls back when the
run's worker stops."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import Scope
from tests.conftest import eventually, running
from tests.support import hatchet_for
from worker import Context, DesiredWorkerLabel, StickyStrategy, WorkerLabelComparator

pytestmark = pytest.mark.timeout(120)

GPU = {"gpu": DesiredWorkerLabel("a100", required=True)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _directed(engine: Engine, tenant: str, *names: str, ns: str = "default") -> bool:
    """The engine's dispatcher may place tasks on every worker named (its consumer made)."""
    live = engine.dispatchers[tenant].workers.live(Scope(tenant, ns), _now())
    return {w.name for w in live if w.directed} >= set(names)


@pytest.mark.parametrize("ns", ["default", "staging"])
async def test_a_step_requiring_a_label_waits_until_a_worker_with_it_starts(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    ns: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name, ns)
    wf = hatchet.workflow(name="Infer")

    @wf.task(desired_worker_labels=GPU)
    async def infer(input: Any, ctx: Context) -> str:
        assert ctx.worker is not None
        return ctx.worker.id()

    async with AsyncExitStack() as stack:
        cpu = await stack.enter_async_context(
            running(hatchet.worker("cpu", slots=2, workflows=[wf]))
        )
        await eventually(lambda: _directed(engine, tenant_name, "cpu", ns=ns))
        ref = await wf.aio_run_no_wait({})

        async def held() -> dict[str, Any] | None:
            run = await get_run(db, ref.workflow_run_id, tenant=tenant_name)
            step = run["steps"][0] if run and run["steps"] else None
            return run if step and step.get("waiting_for") else None

        run = await eventually(held, timeout_s=30)
        assert run["status"] == "QUEUED"
        assert run["steps"][0]["waiting_for"] == "no live worker has gpu == 'a100' (required)"
        gpu = await stack.enter_async_context(
            running(hatchet.worker("gpu", slots=2, labels={"gpu": "a100"}, workflows=[wf]))
        )
        result = await asyncio.wait_for(ref.aio_result(), 30)
        assert result == {"infer": gpu.id} and cpu.id != gpu.id
    hatchet.close()


async def test_weights_prefer_the_better_worker(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Prefer")
    desired = {
        "memory": DesiredWorkerLabel(
            64, weight=100, comparator=WorkerLabelComparator.GREATER_THAN_OR_EQUAL
        ),
        "zone": DesiredWorkerLabel("eu", weight=10),
    }

    @wf.task(desired_worker_labels=desired)
    async def work(input: Any, ctx: Context) -> str:
        assert ctx.worker is not None
        return ctx.worker.id()

    async with AsyncExitStack() as stack:
        small = await stack.enter_async_context(
            running(
                hatchet.worker(
                    "small", slots=20, labels={"memory": 32, "zone": "eu"}, workflows=[wf]
                )
            )
        )
        big = await stack.enter_async_context(
            running(hatchet.worker("big", slots=20, labels={"memory": 128}, workflows=[wf]))
        )
        await eventually(lambda: _directed(engine, tenant_name, "small", "big"))
        refs = [await wf.aio_run_no_wait({"n": n}) for n in range(10)]
        ran = Counter([(await asyncio.wait_for(r.aio_result(), 30))["work"] for r in refs])
    hatchet.close()
    assert ran == {big.id: 10}, (ran, small.id, big.id)


async def test_upsert_labels_makes_a_waiting_step_runnable(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    load = hatchet.workflow(name="Load")
    use = hatchet.workflow(name="Use")

    @load.task()
    async def load_model(input: Any, ctx: Context) -> str:
        assert ctx.worker is not None
        ctx.worker.upsert_labels({"model": "m1"})
        return ctx.worker.id()

    @use.task(desired_worker_labels={"model": DesiredWorkerLabel("m1", required=True)})
    async def predict(input: Any, ctx: Context) -> str:
        assert ctx.worker is not None
        return ctx.worker.id()

    async with running(hatchet.worker("w", slots=2, workflows=[load, use])) as w:
        await eventually(lambda: _directed(engine, tenant_name, "w"))
        waiting = await use.aio_run_no_wait({})

        async def held() -> bool:
            run = await get_run(db, waiting.workflow_run_id, tenant=tenant_name)
            return bool(run and run["steps"] and run["steps"][0].get("waiting_for"))

        await eventually(held, timeout_s=30)
        assert await load.aio_run({}) == {"load_model": w.id}
        assert await asyncio.wait_for(waiting.aio_result(), 30) == {"predict": w.id}
    hatchet.close()


async def test_hard_sticky_keeps_every_step_of_a_run_on_one_worker(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Sticky", sticky=StickyStrategy.HARD)

    def who(ctx: Context) -> str:
        assert ctx.worker is not None
        return ctx.worker.id()

    @wf.task()
    async def one(input: Any, ctx: Context) -> str:
        await asyncio.sleep(0.01)
        return who(ctx)

    @wf.task(parents=[one])
    async def two(input: Any, ctx: Context) -> str:
        return who(ctx)

    @wf.task(parents=[one])
    async def three(input: Any, ctx: Context) -> str:
        return who(ctx)

    @wf.task(parents=[two, three])
    async def four(input: Any, ctx: Context) -> str:
        return who(ctx)

    async with AsyncExitStack() as stack:
        for name in ("a", "b"):
            await stack.enter_async_context(running(hatchet.worker(name, slots=3, workflows=[wf])))
        await eventually(lambda: _directed(engine, tenant_name, "a", "b"))
        refs = [await wf.aio_run_no_wait({"n": n}) for n in range(12)]
        results = [await asyncio.wait_for(r.aio_result(), 60) for r in refs]
    hatchet.close()
    for result in results:
        assert len(set(result.values())) == 1, result  # HARD: never elsewhere
    assert len({next(iter(r.values())) for r in results}) == 2  # both workers had runs


async def test_soft_sticky_falls_back_when_its_worker_stops(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Soft", sticky=StickyStrategy.SOFT)
    started, release = asyncio.Event(), asyncio.Event()

    @wf.task()
    async def first(input: Any, ctx: Context) -> str:
        started.set()
        await release.wait()
        assert ctx.worker is not None
        return ctx.worker.id()

    @wf.task(parents=[first])
    async def second(input: Any, ctx: Context) -> str:
        assert ctx.worker is not None
        return ctx.worker.id()

    a = hatchet.worker("a", slots=2, workflows=[wf])
    b = hatchet.worker("b", slots=2, workflows=[wf])
    a_task = asyncio.create_task(a.async_start())
    await asyncio.wait_for(a.ready.wait(), 30)
    await eventually(lambda: _directed(engine, tenant_name, "a"))
    ref = await wf.aio_run_no_wait({})
    await asyncio.wait_for(started.wait(), 30)
    async with running(b):
        await eventually(lambda: _directed(engine, tenant_name, "b"))
        stopping = asyncio.create_task(a.shutdown())  # says STOPPING at once, drains first
        await eventually(lambda: not _directed_sync(engine, tenant_name, "a"))
        release.set()
        result = await asyncio.wait_for(ref.aio_result(), 30)
        await stopping
        await asyncio.wait_for(a_task, 30)
    hatchet.close()
    assert result == {"first": a.id, "second": b.id}


def _directed_sync(engine: Engine, tenant: str, name: str) -> bool:
    live = engine.dispatchers[tenant].workers.live(Scope(tenant), _now())
    return any(w.name == name and w.directed for w in live)
