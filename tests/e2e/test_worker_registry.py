"""The engine's dispatcher knows the live workers of its tenant from their heartbeats
(dispatcher.workers, fed by the worker gate): who they are, their slots, and the capacity
of a workflow, which goes when the worker stops."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dispatcher.hearing import Hearing
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope
from tests.conftest import eventually, running
from tests.support import hatchet_for
from worker import Context, DesiredWorkerLabel

pytestmark = pytest.mark.timeout(60)


async def test_the_dispatcher_hears_live_workers_and_their_capacity(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Cap")

    @wf.task()
    async def work(input: Any, ctx: Context) -> int:
        return 1

    registry = engine.dispatchers[tenant_name].workers
    scope = Scope(tenant_name)

    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async with running(hatchet.worker("w1", slots=3, workflows=[wf])):
        await eventually(lambda: registry.capacity(scope, "Cap", now()) == 3)
        (live,) = registry.live(scope, now())
        assert live.name == "w1" and live.runs("Cap", "work")
        assert not live.beat.directed  # no step of it is placed: no directed tasks
        assert registry.capacity(scope, "Other", now()) == 0
    # The last beat says STOPPED: the worker is gone at once.
    await eventually(lambda: registry.capacity(scope, "Cap", now()) == 0)
    hatchet.close()


async def test_a_new_dispatcher_knows_the_live_workers_from_their_kept_beats(
    nats_server: NatsServer, engine: Engine, tenant_name: str
) -> None:
    """What a dispatcher starting again does first: the latest beat of each worker kept in
    the liveness stream, before any new beat."""
    hatchet = hatchet_for(nats_server, tenant_name)
    wf = hatchet.workflow(name="Kept")

    @wf.task(desired_worker_labels={"gpu": DesiredWorkerLabel("a100")})  # placed: directed
    async def work(input: Any, ctx: Context) -> int:
        return 1

    scope = Scope(tenant_name)
    dispatcher = engine.dispatchers[tenant_name]
    async with running(hatchet.worker("w1", slots=2, labels={"gpu": "a100"}, workflows=[wf])):
        await eventually(lambda: dispatcher.workers.capacity(scope, "Kept") == 2)
        fresh = Hearing(dispatcher.nc, tenant_name)
        await fresh.hear_kept_beats()
        (live,) = fresh.workers.live(scope, dt.datetime.now(dt.UTC))
        assert (live.name, live.labels) == ("w1", {"gpu": "a100"})
        await eventually(lambda: fresh.workers.live(scope, dt.datetime.now(dt.UTC))[0].directed)
    hatchet.close()
