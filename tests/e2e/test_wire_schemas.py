"""Messages that are not in a tenant's log follow their JSON Schemas too: a worker's
heartbeats (the live stream) and the engine's refusal of a worker (core NATS)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from nats.aio.client import Client as NATS

from eventstore.tail import read_to_end
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope, WorkerHeartbeat, WorkerStatus, encode, utcnow
from schemas.subjects import live_stream_name
from tests.conftest import eventually, running
from tests.support import hatchet_for
from tests.wire import kind_of, validate_message
from worker import Context, Hatchet


def echo(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Echo")
    class Echo:
        @hatchet.step()
        def say(self, context: Context) -> Any:
            return context.workflow_input()

    return Echo()


async def test_a_workers_heartbeats_follow_their_schema(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("beating", max_runs=1)
    worker.register_workflow(echo(hatchet))
    async with running(worker):
        assert await (await hatchet.admin.aio_run_workflow("Echo", {"x": 1})).result()

        async def beats() -> list[Any]:
            stream = live_stream_name(tenant_name)
            return [r async for r in read_to_end(nc, stream) if kind_of(r.subject)]

        records = await eventually(beats)
    hatchet.close()
    for record in records:
        assert kind_of(record.subject) == "heartbeat"
        validate_message(record.subject, record.data, f" (seq {record.seq})")


async def test_the_engines_refusal_follows_its_schema(
    engine: Engine, nc: NATS, tenant_name: str
) -> None:
    scope = Scope(tenant_name)
    worker_id = "w-from-the-future"
    answers: asyncio.Queue[Any] = asyncio.Queue()
    sub = await nc.subscribe(scope.worker_refused(worker_id), cb=answers.put)
    now = utcnow()
    beat = WorkerHeartbeat(
        worker_id, "future", ("Echo:say",), 1, 0, WorkerStatus.ACTIVE, now, protocol=99
    )

    async def refused() -> Any:
        """The first answer; until one comes, a heartbeat again (as the worker would)."""
        if answers.empty():
            await nc.publish(scope.worker(worker_id), encode(beat))
            return None
        return answers.get_nowait()

    answer = await eventually(refused, interval_s=0.2)
    await sub.unsubscribe()
    assert kind_of(answer.subject) == "refused"
    validate_message(answer.subject, answer.data)
