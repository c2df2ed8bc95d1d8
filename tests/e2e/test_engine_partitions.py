"""The engine's side of a partitioned dispatch (issue 16), on real NATS and Postgres: each
partition of a tenant is a unit with its own dispatcher and worker gate, several of them may
run in one engine, and engines agree on the count. The dispatchers here are stand-ins that
only record their partition and the workers they hear: whether runs are decided across
partitions is the dispatcher's own tests' business."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.partition import WHOLE, Partition
from eventstore import Connection, Service, publish
from natchet.config import EngineSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.leases import Unit
from natchet.partitions import SETTINGS_BUCKET, partitions_key
from schemas import Scope, WorkerHeartbeat, WorkerStatus, encode
from schemas.protocol import PROTOCOL
from tests.conftest import eventually
from tests.eventstore.test_leases import FAST
from tests.support import scrape, total

pytestmark = pytest.mark.timeout(120)


class StandIn(Service):
    """What the engine asks of a dispatcher: ``ready``, ``heard``, run and shut down."""

    made: list[StandIn] = []

    def __init__(
        self,
        nc: Connection,
        tenant: str,
        *,
        partition: Partition = WHOLE,
        on_log_full: Any = None,
        **_: Any,
    ):
        super().__init__()
        self.tenant = tenant
        self.partition = partition
        self.on_log_full = on_log_full
        self.ready = asyncio.Event()
        self.heard_from: set[str] = set()
        StandIn.made.append(self)

    def heard(self, _scope: Scope, beat: WorkerHeartbeat) -> None:
        self.heard_from.add(beat.worker_id)

    async def _serve(self) -> None:
        self.ready.set()
        await self.stopping.wait()


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    StandIn.made = []
    monkeypatch.setattr("natchet.engine.Dispatcher", StandIn)
    yield


def settings(nats_server: NatsServer, dsn: str, tenant: str, **more: Any) -> EngineSettings:
    return EngineSettings(nats_server.url, dsn, (tenant,), role="dispatch", **more)


async def beat(nc: Connection, tenant: str, worker_id: str) -> None:
    hb = WorkerHeartbeat(
        worker_id, "w", ("wf:a",), 1, 0, WorkerStatus.ACTIVE, "t", protocol=PROTOCOL
    )
    await publish(nc, Scope(tenant).worker(worker_id), encode(hb))


async def test_without_leases_one_engine_runs_every_partition_each_hearing_the_workers(
    nats_server: NatsServer, dsn: str, tenant_name: str, nc: Connection
) -> None:
    engine = Engine(settings(nats_server, dsn, tenant_name, leases=False, dispatch_partitions=3))
    async with engine:
        units = [Unit(tenant_name, "dispatch", p) for p in range(3)]
        assert sorted(engine.dispatch) == units
        assert [engine.dispatch[u].partition for u in units] == [  # type: ignore[attr-defined]
            Partition(p, 3) for p in range(3)
        ]
        assert engine.partitions == {tenant_name: 3}
        assert engine.dispatchers == {tenant_name: engine.dispatch[units[0]]}
        assert sorted(engine.gates) == units  # a gate per partition
        assert engine.nudges == {}  # one server: no sourcing nudge at all
        # A full log is recorded by partition 0 only: every partition appends to it.
        assert [s.on_log_full is not None for s in StandIn.made] == [True, False, False]

        async def all_heard() -> bool:
            # Beating again, as a worker does: a gate subscribes once it runs.
            await beat(nc, tenant_name, "w-1")
            return all(s.heard_from == {"w-1"} for s in StandIn.made)

        await eventually(all_heard, interval_s=0.2)
    assert engine.dispatch == {} and engine.gates == {}
    assert all(not s.running for s in StandIn.made)


async def test_a_tenant_not_split_runs_as_it_always_did(
    nats_server: NatsServer, dsn: str, tenant_name: str
) -> None:
    async with Engine(settings(nats_server, dsn, tenant_name, leases=False)) as engine:
        assert list(engine.dispatch) == [Unit(tenant_name, "dispatch")]
        assert [s.partition for s in StandIn.made] == [WHOLE]


async def test_engines_agree_on_the_first_count_and_share_the_partitions(
    nats_server: NatsServer, dsn: str, nc: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = f"p{uuid.uuid4().hex[:12]}"
    first = Engine(
        settings(nats_server, dsn, tenant, dispatch_partitions=2, metrics_port=0),
        lease_timing=FAST,
    )
    second = Engine(settings(nats_server, dsn, tenant, dispatch_partitions=3), lease_timing=FAST)
    async with first:
        assert first.leases is not None
        both = {Unit(tenant, "dispatch", 0), Unit(tenant, "dispatch", 1)}
        await eventually(lambda: set(first.dispatch) == both)
        kv = await nc.jetstream().key_value(SETTINGS_BUCKET)
        assert (await kv.get(partitions_key(tenant))).value == b"2"
        with caplog.at_level(logging.WARNING, logger="natchet.partitions"):
            async with second:
                assert second.partitions == {tenant: 2}  # the recorded count, not its 3
                assert any("(3) is not used" in r.getMessage() for r in caplog.records)
                await eventually(lambda: len(first.dispatch) == len(second.dispatch) == 1)
                assert set(first.dispatch) | set(second.dispatch) == both
                assert first.health is not None
                samples = await scrape(first.health.url)
                (held,) = first.dispatch
                for p in (0, 1):
                    value = total(
                        samples,
                        "natchet_lease_held",
                        tenant=tenant,
                        component="dispatch",
                        partition=str(p),
                    )
                    assert value == (1 if held.part == p else 0)
        await eventually(lambda: set(first.dispatch) == both, timeout_s=10)
