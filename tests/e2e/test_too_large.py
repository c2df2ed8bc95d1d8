"""A message the log can never store does not stall the tenant: an event whose run's
messages would be over the size limit, or a step output whose children's tasks would be,
becomes the run's recorded end (with the size and the limit), and the line moves on."""

from __future__ import annotations

from typing import Any

import psycopg
from nats.aio.client import Client as NATS

from eventstore import Append, append, max_message_bytes
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import Scope
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet


def chain(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Chain", on_events=["big"])
    class Chain:
        @hatchet.step()
        def first(self, context: Context) -> Any:
            size = context.workflow_input().get("output_bytes", 0)
            return {"blob": "y" * size} if size else {"ok": True}

        @hatchet.step(parents=["first"])
        def second(self, context: Context) -> Any:
            return {"done": True}

    return Chain()


async def runs_by_status(db: psycopg.AsyncConnection[Any], tenant: str) -> dict[str, list[Any]]:
    cur = await db.execute(
        "SELECT status, input, error FROM runs WHERE tenant = %s ORDER BY created_at", (tenant,)
    )
    out: dict[str, list[Any]] = {}
    for status, payload, error in await cur.fetchall():
        out.setdefault(status, []).append((payload, error))
    return out


async def test_a_near_max_event_is_rejected_and_the_next_one_runs(
    nats_server: NatsServer,
    engine: Engine,
    nc: NATS,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    """The event itself fits (NATS takes it); the run it would create does not (its created
    and task messages carry the input plus more)."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("chain", max_runs=2)
    worker.register_workflow(chain(hatchet))
    async with running(worker):
        limit = max_message_bytes(nc)
        near_max = b'{"blob": "' + b"x" * (limit - 100) + b'"}'
        await append(nc, Append(Scope(tenant_name).event("big"), near_max))
        await hatchet.event.aio_push("big", {"small": True})

        async def both_decided() -> dict[str, list[Any]] | None:
            runs = await runs_by_status(db, tenant_name)
            return runs if "SUCCEEDED" in runs and "FAILED" in runs else None

        runs = await eventually(both_decided)
    hatchet.close()
    assert [payload for payload, _ in runs["SUCCEEDED"]] == [{"small": True}]
    [(_, error)] = runs["FAILED"]  # the rejected run, with why
    assert "bytes, over the" in error and f"{limit:,}-byte limit" in error


async def test_a_step_output_too_large_for_the_next_task_fails_the_run(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """first's output fits in its result, but second's task (input + parent output) does
    not: the run ends FAILED saying so, and a run started after it succeeds."""
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("chain", max_runs=2)
    worker.register_workflow(chain(hatchet))
    async with running(worker):
        limit = 1024 * 1024 - 1024
        # first's result (its output) fits; second's task carries the input and that
        # output, and does not.
        big_input = {"output_bytes": limit - 100_000, "pad": "p" * 200_000}
        big = await hatchet.admin.aio_run_workflow("Chain", big_input)
        failed = await run_ends(db, big.workflow_run_id)
        small = await hatchet.admin.aio_run_workflow("Chain", {})
        assert await small.result() == {"first": {"ok": True}, "second": {"done": True}}
    hatchet.close()
    assert failed["status"] == "FAILED"
    assert "task message for step 'second'" in failed["error"]
    assert "over the" in failed["error"]
