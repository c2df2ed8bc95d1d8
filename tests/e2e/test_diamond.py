"""An event written to the NATS socket with the bare protocol runs a diamond workflow."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from natchet.dev.demo import raw_publish
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends, runs_of
from worker import Context


def diamond(hatchet: Any) -> Any:
    @hatchet.workflow(on_events=["order:placed"])
    class Diamond:
        @hatchet.step()
        def a(self, context: Context) -> dict[str, Any]:
            context.log("a saw the input")
            return {"a": context.workflow_input()["n"]}

        @hatchet.step(parents=["a"])
        async def b(self, context: Context) -> dict[str, Any]:
            return {"b": context.step_output("a")["a"] + 1}

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> dict[str, Any]:
            return {"c": context.step_output("a")["a"] * 10}

        @hatchet.step(parents=["b", "c"])
        def d(self, context: Context) -> dict[str, Any]:
            return {"d": [context.step_output("b"), context.step_output("c")]}

    return Diamond()


async def test_raw_protocol_event_runs_diamond_to_success(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    worker = hatchet.worker("diamond-worker", max_runs=4)
    worker.register_workflow(diamond(hatchet))
    async with running(worker):
        subject = f"{tenant_name}.default.events.order:placed"
        raw_publish("127.0.0.1", nats_server.port, subject, [orjson.dumps({"n": 4})])
        runs = await eventually(lambda: runs_of(db, tenant_name))
        run = await run_ends(db, runs[0]["id"])
    hatchet.close()

    assert run["status"] == "SUCCEEDED", run
    assert run["workflow"] == "Diamond"
    assert run["input"] == {"n": 4}
    assert run["triggered_by"]["event_key"] == "order:placed"
    steps = {s["name"]: s for s in run["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys("abcd", "SUCCEEDED")
    assert steps["a"]["output"] == {"a": 4}
    assert steps["b"]["output"] == {"b": 5}
    assert steps["c"]["output"] == {"c": 40}
    assert steps["d"]["output"] == {"d": [{"b": 5}, {"c": 40}]}
    assert [line["line"] for line in steps["a"]["logs"]] == ["a saw the input"]
    for step in steps.values():
        assert len(step["attempts"]) == 1
        attempt = step["attempts"][0]
        assert attempt["worker_name"] == "diamond-worker"
        assert attempt["status"] == "SUCCEEDED"
        assert attempt["started_at"] <= attempt["finished_at"]
    # d started only after both of its parents had finished.
    assert steps["d"]["started_at"] >= max(steps["b"]["finished_at"], steps["c"]["finished_at"])


async def test_event_without_registered_workflow_starts_no_run(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    subject = f"{tenant_name}.default.events.nobody:listens"
    raw_publish("127.0.0.1", nats_server.port, subject, [b'{"x": 1}', b"not json"])

    async def both_projected() -> list[Any]:
        cur = await db.execute(
            "SELECT key, valid FROM events WHERE tenant = %s ORDER BY seq", (tenant_name,)
        )
        rows = await cur.fetchall()
        return rows if len(rows) == 2 else []

    rows = await eventually(both_projected)
    assert rows == [("nobody:listens", True), ("nobody:listens", False)]
    assert await runs_of(db, tenant_name) == []
