"""Issue 10: re-running a run that is over, whole or from a step, as new history linked to
it; and publishing an event again. Real NATS, engine, worker and Postgres."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
from natchet.audit import read_run
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas import RunRequested, Scope, encode
from tests.conftest import eventually, running
from tests.e2e.test_cli_audit import natchet
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet, WorkflowRunError


def counted_diamond(hatchet: Hatchet, calls: collections.Counter[str]) -> Any:
    """A diamond whose outputs say which call of their step made them."""

    @hatchet.workflow(on_events=["rerun:go"])
    class Counted:
        @hatchet.step()
        def a(self, context: Context) -> dict[str, Any]:
            calls["a"] += 1
            return {"a": context.workflow_input()["n"], "call": calls["a"]}

        @hatchet.step(parents=["a"])
        def b(self, context: Context) -> dict[str, Any]:
            calls["b"] += 1
            return {"b": context.step_output("a")["a"] + 1, "call": calls["b"]}

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> dict[str, Any]:
            calls["c"] += 1
            return {"c": 10, "call": calls["c"]}

        @hatchet.step(parents=["b", "c"])
        def d(self, context: Context) -> dict[str, Any]:
            calls["d"] += 1
            got = [context.step_output("b")["call"], context.step_output("c")["call"]]
            return {"from": got, "call": calls["d"]}

    return Counted()


async def history(nc: NATS, tenant: str, run_id: str) -> list[tuple[int, str, bytes]]:
    _scope, pairs, _end = await read_run(nc, tenant, run_id, None)
    return [(r.seq, r.subject, r.data) for r, _m in pairs]


async def test_a_rerun_from_a_middle_step_keeps_upstream_outputs_and_leaves_the_original(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    calls: collections.Counter[str] = collections.Counter()
    worker = hatchet.worker("rerunner", max_runs=4)
    worker.register_workflow(counted_diamond(hatchet, calls))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Counted", {"n": 1})
        first = await ref.result()
        original = ref.workflow_run_id
        await run_ends(db, original)
        before = await history(nc, tenant_name, original)

        again = await hatchet.admin.aio_replay(original, from_step="b")
        second = await again.result()
        whole = await hatchet.admin.aio_replay(original)
        third = await whole.result()
        after = await history(nc, tenant_name, original)
    hatchet.close()

    # From b: a and c are kept (c is not downstream of b), b and d run again.
    assert second["a"] == first["a"] and second["c"] == first["c"]
    assert second["b"] == {"b": 2, "call": 2} and second["d"] == {"from": [2, 1], "call": 2}
    # The whole run: every step again, with the original input.
    assert third["a"] == {"a": 1, "call": 2} and third["d"]["call"] == 3
    assert calls == {"a": 2, "b": 3, "c": 2, "d": 3}
    # The original's history is what it was: nothing was appended to it.
    assert after == before

    run = await run_ends(db, again.workflow_run_id)
    assert run["status"] == "SUCCEEDED" and run["input"] == {"n": 1}
    assert run["replay_of"] == {"run_id": original, "from_step": "b"}
    steps = {s["name"]: s for s in run["steps"]}
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys("abcd", "SUCCEEDED")
    assert steps["a"]["output"] == first["a"] and steps["a"]["attempts"] == []
    assert steps["c"]["attempts"] == []
    assert [a["status"] for a in steps["b"]["attempts"]] == ["SUCCEEDED"]
    assert [a["status"] for a in steps["d"]["attempts"]] == ["SUCCEEDED"]
    whole_run = await run_ends(db, whole.workflow_run_id)
    assert whole_run["replay_of"] == {"run_id": original, "from_step": None}

    # The replay's own audit says what it is and what it kept.
    _scope, pairs, _end = await read_run(nc, tenant_name, again.workflow_run_id, None)
    kinds = [r.subject.rsplit(".", 1)[-1] for r, _m in pairs]
    assert kinds[0] == "requested" and kinds[1] == "created"


def blocking(hatchet: Hatchet, release: asyncio.Event) -> Any:
    @hatchet.workflow()
    class Blocking:
        @hatchet.step()
        async def wait(self, context: Context) -> dict[str, Any]:
            await release.wait()
            return {"ok": True}

        @hatchet.step(parents=["wait"])
        def fail(self, context: Context) -> dict[str, Any]:
            raise ValueError("always")

        @hatchet.step(parents=["fail"])
        def last(self, context: Context) -> dict[str, Any]:
            return {}

    return Blocking()


async def refused(hatchet: Hatchet, run_id: str, from_step: str | None = None) -> str:
    ref = await hatchet.admin.aio_replay(run_id, from_step=from_step)
    with pytest.raises(WorkflowRunError) as info:
        await ref.result()
    assert info.value.status == "REJECTED"
    return str(info.value)


async def test_replays_the_engine_cannot_make_are_refused_with_the_reason(
    nats_server: NatsServer, engine: Engine, nc: NATS, tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    release = asyncio.Event()
    worker = hatchet.worker("refuser", max_runs=4)
    worker.register_workflow(blocking(hatchet, release))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Blocking", {})
        running_id = ref.workflow_run_id
        assert "has not ended" in await refused(hatchet, running_id)
        release.set()
        with pytest.raises(WorkflowRunError):
            await ref.result()

        assert "no step 'nope'" in await refused(hatchet, running_id, "nope")
        # `last` needs `fail`, which failed: start from `fail` instead.
        why = await refused(hatchet, running_id, "last")
        assert "needs the output of 'fail'" in why and "replay from 'fail'" in why
        assert "no run missing-run" in await refused(hatchet, "missing-run")

        # Over the raw protocol, a wildcard names no run (and reads no other run's history).
        scope = Scope(tenant_name)
        for bad in (">", "*", "a.b"):
            req = RunRequested(run_id=f"raw-{len(bad)}", workflow="", input=None, replay_of=bad)
            subject = scope.run(req.run_id, "requested")
            await eventstore.append(nc, eventstore.Append(subject, encode(req)))

            async def rejected(run_id: str = req.run_id) -> eventstore.Record | None:
                return await eventstore.direct_last(nc, tenant_name, scope.run(run_id, "rejected"))

            record = await eventually(rejected, timeout_s=15)
            assert b"is not a run id" in record.data

        # From a step that can start: the failing one runs again (and fails again).
        ref2 = await hatchet.admin.aio_replay(running_id, from_step="fail")
        with pytest.raises(WorkflowRunError) as info:
            await ref2.result()
        assert info.value.status == "FAILED" and "always" in str(info.value)
    hatchet.close()


async def test_an_event_published_again_starts_its_workflows_again(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    tenant_name: str,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    calls: collections.Counter[str] = collections.Counter()
    worker = hatchet.worker("event-rerunner", max_runs=4)
    worker.register_workflow(counted_diamond(hatchet, calls))
    async with running(worker):
        pushed = await hatchet.event.aio_push("rerun:go", {"n": 5})
        again = await hatchet.admin.aio_replay_event(pushed.event_id)
        assert again.key == "rerun:go" and int(again.event_id) > int(pushed.event_id)

        async def two_runs() -> list[Any] | None:
            async with db.cursor() as cur:
                await cur.execute(
                    "SELECT triggered_by_event_id, status FROM runs WHERE tenant = %s"
                    " ORDER BY triggered_by_event_id",
                    (tenant_name,),
                )
                rows = await cur.fetchall()
            done = len(rows) == 2 and all(r[1] == "SUCCEEDED" for r in rows)
            return rows if done else None

        rows = await eventually(two_runs, timeout_s=30)
        with pytest.raises(eventstore.NatchetError, match="no event 999999"):
            await hatchet.event.aio_replay("999999")
    hatchet.close()
    assert [r[0] for r in rows] == sorted([pushed.event_id, again.event_id])
    assert calls["a"] == 2
    async with db.cursor() as cur:
        await cur.execute(
            "SELECT seq, replay_of FROM events WHERE tenant = %s ORDER BY seq", (tenant_name,)
        )
        events = await cur.fetchall()
    assert events == [(int(pushed.event_id), None), (int(again.event_id), int(pushed.event_id))]


async def test_the_cli_replays_one_run_many_runs_and_an_event(
    nats_server: NatsServer,
    engine: Engine,
    db: psycopg.AsyncConnection[Any],
    nc: NATS,
    tenant_name: str,
    dsn: str,
    tmp_path: Path,
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    calls: collections.Counter[str] = collections.Counter()
    worker = hatchet.worker("cli-rerunner", max_runs=4)
    worker.register_workflow(counted_diamond(hatchet, calls))
    async with running(worker):
        refs = [await hatchet.admin.aio_run_workflow("Counted", {"n": n}) for n in (1, 2)]
        for ref in refs:
            await ref.result()
            await run_ends(db, ref.workflow_run_id)
        original = refs[0].workflow_run_id

        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, "runs", "replay", original, "--from-step", "d"
        )
        assert code == 0, err
        assert f"replays run {original} from step d, keeping a, b, c" in out
        new_id = out.split()[1]
        assert (await run_ends(db, new_id))["replay_of"] == {"run_id": original, "from_step": "d"}

        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, "runs", "replay", original, "--from-step", "x"
        )
        assert code == 1 and out == "" and err.count("\n") == 1, (out, err)
        assert "refused: workflow 'Counted' has no step 'x'" in err

        bulk = (
            "runs",
            "replay",
            "--workflow",
            "Counted",
            "--status",
            "succeeded",
            "--database-url",
            dsn,
        )
        code, out, err = await natchet(tmp_path, nats_server, tenant_name, *bulk)
        assert code == 2 and "--yes" in err, (out, err)  # 3 match; no terminal to ask at
        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, *bulk, "--since", "1h", "--yes"
        )
        assert code == 0, err
        assert "3 runs match" in out

        async def six() -> bool:
            cur = await db.execute(
                "SELECT count(*) FROM runs WHERE tenant = %s AND status = 'SUCCEEDED'",
                (tenant_name,),
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 6

        await eventually(six, timeout_s=30)

        pushed = await hatchet.event.aio_push("rerun:go", {"n": 9})
        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, "events", "replay", pushed.event_id
        )
        assert code == 0, err
        assert f"event {pushed.event_id} published again as event" in out
        code, out, err = await natchet(
            tmp_path, nats_server, tenant_name, "events", "replay", "1", "--namespace", "other"
        )
        assert code == 2 and "no event 1 in" in err and err.count("\n") == 1, (out, err)
    hatchet.close()
