"""A worker with two workflows keeps taking the work of both."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, runs_of
from worker import Context, Hatchet


def workflows(hatchet: Hatchet) -> list[Any]:
    @hatchet.workflow(name="Noop", on_events=["noop"])
    class Noop:
        @hatchet.step()
        async def only(self, context: Context) -> int:
            return 1

    @hatchet.workflow(name="Diamond", on_events=["diamond"])
    class Diamond:
        @hatchet.step()
        async def a(self, context: Context) -> int:
            return 1

        @hatchet.step(parents=["a"])
        async def b(self, context: Context) -> int:
            return 2

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> int:
            return 3

        @hatchet.step(parents=["b", "c"])
        async def d(self, context: Context) -> int:
            return 4

    return [Noop(), Diamond()]


@pytest.mark.parametrize("max_runs", [8, 1])
async def test_a_worker_with_two_workflows_runs_both(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
    max_runs: int,
) -> None:
    """An idle workflow's request for tasks does not hold the slots the busy one needs
    (it did: 9 of 50 diamonds started, then nothing), one slot between two included."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("both", max_runs=max_runs)
    for wf in workflows(hatchet):
        worker.register_workflow(wf)
    async with running(worker):
        for n in range(50):
            await hatchet.event.aio_push("diamond", {"n": n})
        for n in range(10):
            await hatchet.event.aio_push("noop", {"n": n})

        async def all_done() -> bool:
            runs = await runs_of(db, tenant_name)
            return len(runs) == 60 and all(r["status"] == "SUCCEEDED" for r in runs)

        await eventually(all_done, timeout_s=30)
    hatchet.close()
