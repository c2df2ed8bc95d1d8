"""Several ``natchet engine`` processes on the same tenants (``natchet.leases``): each
tenant's dispatcher and projector run in one engine at a time, the units spread over the
engines, a killed engine's units move to another within the lease's bound, a stopped one's
at once, and no transition lands twice in the log while they move."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS

from bench.chaos_check import LogView, read_log
from bench.chaos_cluster import duplicate_msg_ids
from bench.chaos_load import persist
from bench.hot_leases import held_by
from eventstore import Append, TransportError, append
from natchet.dev.embedded import NatsServer
from natchet.leases import LeaseTiming
from schemas import Scope
from tests.conftest import eventually, running
from tests.support import hatchet_for, runs_of, start_engine_process, stop
from worker import Context, Hatchet

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

TIMING = LeaseTiming()  # what `natchet engine` uses
# kill -9: the server expires the lease ttl after its last renewal (which was up to renew_s
# before the kill); the watcher hears the expiry marker at once. Slack for a loaded box.
KILL_BOUND_S = TIMING.ttl_s + 5.0
# Handed over, not expired: the unit stops cleanly (a batch, a snapshot), then the key is
# deleted. Without a release the key could go no sooner than ttl - renew after the signal
# (its last renewal at most renew_s before); a loaded machine's clean stop stays under that.
SIGTERM_BOUND_S = TIMING.ttl_s - TIMING.renew_s


def new_tenants(n: int) -> list[str]:
    return [f"t{uuid.uuid4().hex[:12]}" for _ in range(n)]


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


holders = held_by  # each held key of a list: the pid of the process holding it


def dispatch_keys(tenants: list[str]) -> list[str]:
    return [f"dispatch.{t}" for t in tenants]


def project_keys(tenants: list[str]) -> list[str]:
    return [f"project.{t}" for t in tenants]


class Engines:
    """Engine processes on one NATS and Postgres for ``tenants``, stopped at the end."""

    def __init__(self, server: NatsServer, dsn: str, tenants: list[str], logs: Path) -> None:
        self.server, self.dsn, self.tenants, self.logs = server, dsn, tenants, logs
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        """One more engine, given ``args`` (``natchet engine``'s flags)."""
        log = self.logs / f"engine-{len(self.procs)}.log"
        tenants = ",".join(self.tenants)
        proc = await start_engine_process(self.server, self.dsn, tenants, log, *args)
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        await asyncio.gather(*(stop(p) for p in self.procs))


@pytest.fixture
async def engines(
    nats_server: NatsServer, dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Engines]:
    count = getattr(request, "param", 1)
    group = Engines(nats_server, dsn, new_tenants(count), tmp_path)
    try:
        yield group
    finally:
        await group.stop_all()


def echo(hatchet: Hatchet, step_s: float = 0.05) -> Any:
    @hatchet.workflow(on_events=["echo"])
    class Echo:
        @hatchet.step()
        async def first(self, context: Context) -> dict[str, Any]:
            await asyncio.sleep(step_s)
            return {"n": context.workflow_input()["n"]}

        @hatchet.step(parents=["first"])
        async def second(self, context: Context) -> dict[str, Any]:
            await asyncio.sleep(step_s)
            return {"n": context.workflow_input()["n"]}

    return Echo()


async def publish(nc: NATS, tenant: str, numbers: range, every_s: float = 0.0) -> None:
    """The events, each retried until stored (a node of a cluster may be down a while),
    with a dedup id so that a retry of one stored already adds nothing."""
    subject = Scope(tenant).event("echo")
    for n in numbers:
        item = Append(subject, orjson.dumps({"n": n}), f"several-engines-{tenant}-{n}")

        async def one(item: Append = item) -> int:
            return await append(nc, item)

        await persist(f"event {n}", one)
        if every_s:
            await asyncio.sleep(every_s)  # pacing: it synchronizes nothing


@contextlib.asynccontextmanager
async def echo_worker(
    nats_server: NatsServer, tenant: str, *, max_runs: int, step_s: float = 0.05
) -> AsyncIterator[None]:
    """A worker running ``echo`` for ``tenant`` while the block runs."""
    hatchet = hatchet_for(nats_server, tenant)
    worker = hatchet.worker("echo-worker", max_runs=max_runs)
    worker.register_workflow(echo(hatchet, step_s=step_s))
    try:
        async with running(worker):
            yield
    finally:
        hatchet.close()


async def some_succeeded(dsn: str, tenant: str) -> None:
    """Wait until a run of ``tenant`` has SUCCEEDED (the engines are doing the work)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:

        async def any_done() -> bool:
            return any(r["status"] == "SUCCEEDED" for r in await runs_of(db, tenant))

        await eventually(any_done, timeout_s=60)


async def all_succeed(dsn: str, tenant: str, count: int, timeout_s: float = 90) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:

        async def done() -> bool:
            runs = await runs_of(db, tenant)
            return sum(1 for r in runs if r["status"] == "SUCCEEDED") >= count

        await eventually(done, timeout_s=timeout_s, interval_s=0.5)
        runs = await runs_of(db, tenant)
    assert len(runs) == count and all(r["status"] == "SUCCEEDED" for r in runs)
    assert sorted(r["steps"][-1]["output"]["n"] for r in runs) == list(range(count))


async def logged_once(nc: NATS, tenant: str, count: int) -> None:
    """Every run created and finished once; no transition, no dedup id, twice. The log is
    read again when a read breaks: after a cluster node came back, the reading consumer's
    server can still change (a read once answered 503, no responders, midway)."""

    async def read() -> LogView | None:
        try:
            return await read_log(nc, tenant)
        except TransportError:
            return None

    view = await eventually(read, timeout_s=30, interval_s=0.5)
    assert view.duplicated_transitions() == []
    assert await duplicate_msg_ids(nc, tenant) == []
    created = [r for (r, kind), n in view.kinds.items() if kind == "created"]
    finished = [r for (r, kind), n in view.kinds.items() if kind == "finished"]
    assert len(created) == len(finished) == count


async def moved(nc: NATS, key: str, away_from: int, timeout_s: float) -> tuple[int, float]:
    """Wait until a process other than ``away_from`` holds ``key``: (its pid, seconds)."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def other() -> int | None:
        pid = (await holders(nc, [key])).get(key)
        return pid if pid not in (None, away_from) else None

    pid = await eventually(other, timeout_s=timeout_s, interval_s=0.05)
    return pid, loop.time() - began


@pytest.mark.parametrize("engines", [4], indirect=True)
async def test_units_spread_over_two_engines(engines: Engines, nc: NATS) -> None:
    a, b = await engines.start(), await engines.start()
    tenants = engines.tenants

    async def spread() -> dict[str, int] | None:
        held = await holders(nc, dispatch_keys(tenants) + project_keys(tenants))
        if len(held) < 2 * len(tenants):
            return None
        dispatchers = [held[k] for k in dispatch_keys(tenants)]
        projectors = [parent_of(held[k]) for k in project_keys(tenants)]
        fair = len(tenants) // 2
        ok = all(
            units.count(p) == fair for units in (dispatchers, projectors) for p in (a.pid, b.pid)
        )
        return held if ok else None

    await eventually(spread, timeout_s=60, interval_s=0.2)


async def test_kill_9_moves_its_units_and_every_run_completes_once(
    engines: Engines, nats_server: NatsServer, nc: NATS
) -> None:
    (tenant,) = engines.tenants
    first = await engines.start()
    await eventually(lambda: holders(nc, dispatch_keys([tenant])), timeout_s=60)
    second = await engines.start()
    key = f"dispatch.{tenant}"
    async with echo_worker(nats_server, tenant, max_runs=8):
        load = asyncio.create_task(publish(nc, tenant, range(150), every_s=0.1))
        await some_succeeded(engines.dsn, tenant)  # runs done, and more coming, under the first
        assert (await holders(nc, [key]))[key] == first.pid
        first.kill()
        pid, took = await moved(nc, key, first.pid, KILL_BOUND_S + 10)
        print(f"\nkill -9: {key} moved to the other engine after {took:.2f}s")
        assert pid == second.pid and took < KILL_BOUND_S
        await load
        await all_succeed(engines.dsn, tenant, 150)
    await logged_once(nc, tenant, 150)


async def test_sigterm_hands_its_units_over_at_once(
    engines: Engines, nats_server: NatsServer, nc: NATS
) -> None:
    (tenant,) = engines.tenants
    first = await engines.start()
    keys = [f"dispatch.{tenant}", f"project.{tenant}"]

    async def both_held() -> bool:
        return len(await holders(nc, keys)) == 2

    await eventually(both_held, timeout_s=60)
    second = await engines.start()
    async with echo_worker(nats_server, tenant, max_runs=8):
        load = asyncio.create_task(publish(nc, tenant, range(60), every_s=0.05))
        await some_succeeded(engines.dsn, tenant)  # runs done, and more coming, under the first
        before = await holders(nc, keys)
        assert before[keys[0]] == first.pid and parent_of(before[keys[1]]) == first.pid
        first.send_signal(signal.SIGTERM)
        pid, took = await moved(nc, keys[0], first.pid, 30)
        print(f"\nSIGTERM: {keys[0]} moved to the other engine after {took:.2f}s")
        assert pid == second.pid and took < SIGTERM_BOUND_S
        child, took_p = await moved(nc, keys[1], before[keys[1]], 30)
        print(f"SIGTERM: {keys[1]} moved after {took_p:.2f}s")
        assert parent_of(child) == second.pid and took_p < SIGTERM_BOUND_S
        assert await asyncio.wait_for(first.wait(), 30) == 0
        await load
        await all_succeed(engines.dsn, tenant, 60)
    await logged_once(nc, tenant, 60)


async def test_stopping_every_engine_and_starting_one_resumes_every_run(
    engines: Engines, nats_server: NatsServer, nc: NATS
) -> None:
    (tenant,) = engines.tenants
    await engines.start()
    await engines.start()
    await eventually(lambda: holders(nc, dispatch_keys([tenant])), timeout_s=60)
    async with echo_worker(nats_server, tenant, max_runs=4, step_s=0.3):
        await publish(nc, tenant, range(40))
        await some_succeeded(engines.dsn, tenant)
        await engines.stop_all()
        async with await psycopg.AsyncConnection.connect(engines.dsn, autocommit=True) as db:
            assert sum(r["status"] == "SUCCEEDED" for r in await runs_of(db, tenant)) < 40
        await engines.start()
        await all_succeed(engines.dsn, tenant, 40)
    await logged_once(nc, tenant, 40)
