"""``natchet engine`` runs the dispatcher in its own process and the projector in a second
one it starts and watches (``natchet/projector_process.py``): runs still reach Postgres, the
projector process is restarted when it dies, and it never outlives its engine, whether the
engine stops cleanly or is killed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from natchet.dev.demo import raw_publish
from natchet.dev.embedded import NatsServer
from tests.conftest import eventually, running
from tests.support import alive, hatchet_for, runs_of, start_engine_process, stop
from worker import Context

pytestmark = pytest.mark.timeout(120)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def projector_of(engine_pid: int) -> int | None:
    # Each child's command line read once: a child dying between two reads has none.
    kids = [(p, line) for p in children(engine_pid) if "--role" in (line := cmdline(p))]
    kids = [(p, line) for p, line in kids if alive(p)]
    assert len(kids) <= 1, kids
    if kids and kids[0][1][kids[0][1].index("--role") + 1] == "project":
        return kids[0][0]
    return None


@pytest.fixture
async def engine_process(
    nats_server: NatsServer, dsn: str, tenant_name: str, tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await start_engine_process(nats_server, dsn, tenant_name, tmp_path / "engine.log")
    try:
        yield proc
    finally:
        await stop(proc)  # stops its projector process too


def echo(hatchet: Any) -> Any:
    @hatchet.workflow(on_events=["echo"])
    class Echo:
        @hatchet.step()
        async def only(self, context: Context) -> dict[str, Any]:
            return {"n": context.workflow_input()["n"]}

    return Echo()


async def _runs_succeed(nats_server: NatsServer, dsn: str, tenant: str, numbers: list[int]) -> None:
    hatchet = hatchet_for(nats_server, tenant)
    worker = hatchet.worker("echo-worker", max_runs=4)
    worker.register_workflow(echo(hatchet))
    async with (
        running(worker),
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db,
    ):
        bodies = [orjson.dumps({"n": n}) for n in numbers]
        raw_publish("127.0.0.1", nats_server.port, f"{tenant}.default.events.echo", bodies)

        async def all_succeeded() -> bool:
            runs = await runs_of(db, tenant)
            done = {r["steps"][0]["output"]["n"] for r in runs if r["status"] == "SUCCEEDED"}
            return set(numbers) <= done

        await eventually(all_succeeded, timeout_s=60)
    hatchet.close()


async def test_runs_are_projected_by_the_engines_second_process(
    engine_process: asyncio.subprocess.Process, nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    child = await eventually(lambda: projector_of(engine_process.pid))
    await _runs_succeed(nats_server, dsn, tenant_name, [1, 2, 3])
    assert projector_of(engine_process.pid) == child


async def test_a_projector_process_that_dies_is_started_again(
    engine_process: asyncio.subprocess.Process, nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    first = await eventually(lambda: projector_of(engine_process.pid))
    os.kill(first, signal.SIGKILL)
    second = await eventually(lambda: (projector_of(engine_process.pid) or first) != first)
    assert second and engine_process.returncode is None
    await _runs_succeed(nats_server, dsn, tenant_name, [4, 5])


async def test_sigterm_stops_the_engine_and_its_projector_with_exit_0(
    engine_process: asyncio.subprocess.Process,
) -> None:
    child = await eventually(lambda: projector_of(engine_process.pid))
    engine_process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(engine_process.wait(), 30) == 0
    assert not alive(child)


async def test_the_projector_process_does_not_outlive_a_killed_engine(
    engine_process: asyncio.subprocess.Process,
) -> None:
    child = await eventually(lambda: projector_of(engine_process.pid))
    engine_process.kill()
    await engine_process.wait()
    await eventually(lambda: not alive(child), timeout_s=15)
