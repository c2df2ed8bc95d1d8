"""Two ``natchet engine`` processes sharing one tenant whose dispatch is split in two
partitions (issue 16): each engine takes one; kill -9 of one moves its partition to the
other within the lease's bound, and every run, of either partition, completes once, with
no transition twice in the log; SIGTERM hands a partition over at once; stopping both and
starting one resumes every run."""

from __future__ import annotations

import asyncio
import signal

import psycopg
import pytest
from nats.aio.client import Client as NATS

from natchet.dev.embedded import NatsServer
from tests.conftest import eventually
from tests.fault.test_several_engines import (
    KILL_BOUND_S,
    SIGTERM_BOUND_S,
    Engines,
    all_succeed,
    echo_worker,
    engines,  # noqa: F401 (the fixture)
    holders,
    logged_once,
    moved,
    publish,
    some_succeeded,
)
from tests.support import runs_of

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

PARTITIONS = ("--dispatch-partitions", "2")


def partition_keys(tenant: str) -> list[str]:
    return [f"dispatch.{tenant}.0", f"dispatch.{tenant}.1"]


async def split(group: Engines, nc: NATS) -> tuple[dict[str, int], asyncio.subprocess.Process]:
    """Two engines for the tenant, once each holds one partition: (key -> pid, the second)."""
    (tenant,) = group.tenants
    await group.start(*PARTITIONS)
    keys = partition_keys(tenant)
    await eventually(lambda: holders(nc, keys), timeout_s=60)
    second = await group.start(*PARTITIONS)

    async def one_each() -> dict[str, int] | None:
        held = await holders(nc, keys)
        return held if len(held) == 2 and len(set(held.values())) == 2 else None

    held = await eventually(one_each, timeout_s=60, interval_s=0.2)
    assert set(held.values()) == {p.pid for p in group.procs}
    return held, second


def holder_and_other(
    group: Engines, pid: int
) -> tuple[asyncio.subprocess.Process, asyncio.subprocess.Process]:
    """The engine process ``pid`` (holding some unit), and the other one."""
    holder = next(p for p in group.procs if p.pid == pid)
    return holder, next(p for p in group.procs if p is not holder)


async def test_kill_9_of_an_engine_moves_its_partition_and_every_run_completes_once(
    engines: Engines,  # noqa: F811
    nats_server: NatsServer,
    nc: NATS,
) -> None:
    (tenant,) = engines.tenants
    held, _second = await split(engines, nc)
    async with echo_worker(nats_server, tenant, max_runs=8):
        load = asyncio.create_task(publish(nc, tenant, range(150), every_s=0.1))
        await some_succeeded(engines.dsn, tenant)
        victim, survivor = holder_and_other(engines, held[partition_keys(tenant)[1]])
        victim.kill()
        pid, took = await moved(nc, partition_keys(tenant)[1], victim.pid, KILL_BOUND_S + 10)
        print(f"\nkill -9: partition 1 moved to the other engine after {took:.2f}s")
        assert pid == survivor.pid and took < KILL_BOUND_S
        await load
        await all_succeed(engines.dsn, tenant, 150)
    assert set((await holders(nc, partition_keys(tenant))).values()) == {survivor.pid}
    await logged_once(nc, tenant, 150)


async def test_sigterm_of_an_engine_hands_its_partition_over_at_once(
    engines: Engines,  # noqa: F811
    nats_server: NatsServer,
    nc: NATS,
) -> None:
    (tenant,) = engines.tenants
    held, _second = await split(engines, nc)
    key = partition_keys(tenant)[0]
    async with echo_worker(nats_server, tenant, max_runs=8):
        load = asyncio.create_task(publish(nc, tenant, range(60), every_s=0.05))
        await some_succeeded(engines.dsn, tenant)
        leaving, staying = holder_and_other(engines, held[key])
        leaving.send_signal(signal.SIGTERM)
        pid, took = await moved(nc, key, leaving.pid, 30)
        print(f"\nSIGTERM: partition 0 moved to the other engine after {took:.2f}s")
        assert pid == staying.pid and took < SIGTERM_BOUND_S
        assert await asyncio.wait_for(leaving.wait(), 30) == 0
        await load
        await all_succeed(engines.dsn, tenant, 60)
    await logged_once(nc, tenant, 60)


async def test_stopping_every_engine_and_starting_one_resumes_every_partitions_runs(
    engines: Engines,  # noqa: F811
    nats_server: NatsServer,
    nc: NATS,
) -> None:
    (tenant,) = engines.tenants
    await split(engines, nc)
    async with echo_worker(nats_server, tenant, max_runs=4, step_s=0.3):
        await publish(nc, tenant, range(40))
        await some_succeeded(engines.dsn, tenant)
        await engines.stop_all()
        async with await psycopg.AsyncConnection.connect(engines.dsn, autocommit=True) as db:
            assert sum(r["status"] == "SUCCEEDED" for r in await runs_of(db, tenant)) < 40
        one = await engines.start(*PARTITIONS)
        await all_succeed(engines.dsn, tenant, 40)
    assert set((await holders(nc, partition_keys(tenant))).values()) == {one.pid}
    await logged_once(nc, tenant, 40)
