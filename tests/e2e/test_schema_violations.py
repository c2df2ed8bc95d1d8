"""Messages that break their JSON Schema, appended by hand to a live run's history: each is
recorded as a rejection with a clear reason, the dispatcher ignores it, and the run (and
the messages after it) go on. ``"ok": "no"`` was once a success to the dispatcher."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import Scope
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet

# A result for the held step, as a worker would write it (not the worker running it).
RESULT: dict[str, Any] = {
    "step": "first",
    "attempt": 1,
    "delivery": 1,
    "worker_id": "by-hand",
    "ok": True,
    "output": {"forged": True},
    "finished_at": "2026-01-05T09:30:00+00:00",
    "v": 1,
}
BREAKS = [  # (the body's change, the reason recorded)
    ({"attempt": "one"}, "attempt must be an integer, not a string"),
    ({"ok": None}, "ok must be true or false, not null"),
    ({"ok": "no"}, "ok must be true or false, not a string"),
]


def held(hatchet: Hatchet, release: threading.Event) -> Any:
    @hatchet.workflow(name="Held")
    class Held:
        @hatchet.step(timeout="60s")
        def first(self, context: Context) -> Any:
            assert release.wait(60), "never released"
            return {"first": True}

        @hatchet.step(parents=["first"])
        def second(self, context: Context) -> Any:
            return context.step_output("first")

    return Held()


@pytest.mark.invalid_messages(len(BREAKS) + 1)
async def test_schema_breaking_results_are_rejected_and_the_run_goes_on(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    release = threading.Event()
    worker = hatchet.worker("held", max_runs=2)
    worker.register_workflow(held(hatchet, release))
    try:
        async with running(worker):
            ref = await hatchet.admin.aio_run_workflow("Held", {})
            run_id = ref.workflow_run_id

            async def first_runs() -> bool:
                run = await get_run(db, run_id, tenant=tenant_name)
                return bool(run) and run["steps"][0]["status"] == "RUNNING"  # type: ignore[index]

            await eventually(first_runs)
            subject = Scope(tenant_name).run(run_id, "result")
            js = nc.jetstream()
            seqs = {}
            for change, reason in BREAKS:
                ack = await js.publish(subject, orjson.dumps(RESULT | {"run_id": run_id} | change))
                seqs[ack.seq] = reason
            missing = {k: v for k, v in RESULT.items() if k != "ok"} | {"run_id": run_id}
            ack = await js.publish(subject, orjson.dumps(missing))
            seqs[ack.seq] = "missing 1 required positional argument: 'ok'"

            async def rejected() -> dict[int, str]:
                cur = await db.execute(
                    "SELECT seq, reason FROM rejections WHERE tenant = %s", (tenant_name,)
                )
                found = dict(await cur.fetchall())
                return found if set(seqs) <= set(found) else {}

            reasons = await eventually(rejected)
            for seq, reason in seqs.items():
                assert reasons[seq].startswith("bad result message: "), reasons[seq]
                assert reason in reasons[seq], reasons[seq]
            run = await get_run(db, run_id, tenant=tenant_name)
            assert run is not None and run["status"] == "RUNNING"  # none of them ended it
            release.set()
            done = await run_ends(db, run_id)
            # The line is not blocked: another run after them goes through as well.
            after = await hatchet.admin.aio_run_workflow("Held", {"after": True})
            assert (await run_ends(db, after.workflow_run_id))["status"] == "SUCCEEDED"
    finally:
        release.set()
        hatchet.close()
    assert done["status"] == "SUCCEEDED"
    first, second = done["steps"]
    assert first["output"] == {"first": True} and second["output"] == {"first": True}
    assert [a["worker_name"] for a in first["attempts"]] == ["held"]
