"""Two engines on a 3-node cluster (every stream R3, the lease bucket too) under a steady
load; the node leading the lease bucket (``KV_natchet_leases``) is killed with SIGKILL and
started again after 5 s. Its election can outlast the fence (``natchet.leases``): the
holder then stops its units and takes them back by CAS, or the other engine takes them once
they expire. Either way every run completes once and no transition lands twice."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bench.chaos_cluster import stream_leader
from natchet.dev.cluster import NatsCluster
from natchet.leases import BUCKET
from tests.conftest import running
from tests.fault.test_several_engines import all_succeed, echo, logged_once, publish
from tests.support import start_engine_process, stop
from worker import ClientSettings, Hatchet

pytestmark = [pytest.mark.fault, pytest.mark.cluster, pytest.mark.timeout(300)]

RUNS = 100


async def test_losing_the_lease_buckets_leader_loses_and_doubles_nothing(
    nats_cluster: NatsCluster, cluster_nc: NATS, dsn: str, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    engines = [
        await start_engine_process(
            nats_cluster.url, dsn, tenant, tmp_path / f"engine-{i}.log", "--replicas", "3"
        )
        for i in range(2)
    ]
    hatchet = Hatchet(settings=ClientSettings(nats_url=nats_cluster.url, tenant=tenant))
    worker = hatchet.worker("echo-worker", max_runs=8)
    worker.register_workflow(echo(hatchet))
    try:
        async with running(worker):
            load = asyncio.create_task(publish(cluster_nc, tenant, range(RUNS), every_s=0.1))
            await asyncio.sleep(3)
            leader = await stream_leader(cluster_nc, f"KV_{BUCKET}")
            node = nats_cluster.index_of(leader)
            nats_cluster.kill(node)
            await asyncio.sleep(5)
            nats_cluster.start_node(node)
            await load
            await all_succeed(dsn, tenant, RUNS, timeout_s=150)
        await logged_once(cluster_nc, tenant, RUNS)
    finally:
        hatchet.close()
        await asyncio.gather(*(stop(e) for e in engines))
    logs = "".join((tmp_path / f"engine-{i}.log").read_text() for i in range(2))
    lost = [line for line in logs.splitlines() if "leases: lost" in line]
    print(f"\nkilled {leader} (the lease bucket's leader); fences: {len(lost)}")
    for line in lost:
        print(line)
