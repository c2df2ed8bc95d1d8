"""The consumers of a tenant's log that the partitions of its dispatch read (issue 16): each
partition's own durable consumer of the whole log, and the tenant's dispatch lag as the
partition furthest behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from dispatcher.partition import MAX_PARTITIONS, Partition
from eventstore import (
    Append,
    Connection,
    Inputs,
    append,
    dispatcher_ack_floor,
    dispatcher_consumer_name,
    ensure_dispatcher_consumer,
    ensure_tenant_stream,
)
from eventstore.provision import DISPATCHER_CONSUMER
from schemas import Scope, stream_name

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def log(nc: Connection) -> AsyncIterator[Scope]:
    tenant = f"p{uuid.uuid4().hex[:12]}"
    await ensure_tenant_stream(nc, tenant)
    yield Scope(tenant)


def test_the_consumer_names_are_the_partitions_own() -> None:
    """One rule for a partition's consumer name, whether the dispatcher or the probe asks."""
    for count in (1, 2, 5, MAX_PARTITIONS):
        for index in range(count):
            assert dispatcher_consumer_name(index) == Partition(index, count).consumer
    assert dispatcher_consumer_name() == DISPATCHER_CONSUMER
    with pytest.raises(ValueError):
        dispatcher_consumer_name(-1)


async def test_each_partition_reads_the_whole_log_through_a_consumer_of_its_own(
    nc: Connection, log: Scope
) -> None:
    assert await ensure_dispatcher_consumer(nc, log.tenant) == DISPATCHER_CONSUMER
    assert await ensure_dispatcher_consumer(nc, log.tenant, "dispatcher-1") == "dispatcher-1"
    for n in range(3):
        await append(nc, Append(log.event("e"), f'{{"n": {n}}}'.encode()))
    stream = stream_name(log.tenant)
    for name in (DISPATCHER_CONSUMER, "dispatcher-1"):
        inputs = Inputs(nc, stream, name)
        got = await inputs.fetch(10, 2)
        assert [d.seq for d in got] == [1, 2, 3], name
        for delivery in got:
            await delivery.ack_sync()
        assert await inputs.ack_floor() == 3
        await inputs.close()
    # Provisioning again leaves each as it is (not recreated: its position kept).
    info = await nc.jetstream().consumer_info(stream, "dispatcher-1")
    await ensure_dispatcher_consumer(nc, log.tenant, "dispatcher-1")
    again = await nc.jetstream().consumer_info(stream, "dispatcher-1")
    assert again.created == info.created and again.ack_floor.stream_seq == 3


async def test_the_dispatch_lag_is_the_partition_furthest_behind(
    nc: Connection, log: Scope
) -> None:
    for name in (dispatcher_consumer_name(0), dispatcher_consumer_name(1)):
        await ensure_dispatcher_consumer(nc, log.tenant, name)
    for n in range(4):
        await append(nc, Append(log.event("e"), f'{{"n": {n}}}'.encode()))
    stream = stream_name(log.tenant)
    for name, acked in ((dispatcher_consumer_name(0), 4), (dispatcher_consumer_name(1), 2)):
        inputs = Inputs(nc, stream, name)
        for delivery in await inputs.fetch(acked, 2):
            await delivery.ack_sync()
        await inputs.close()
    assert await dispatcher_ack_floor(nc, log.tenant) == 4  # one partition: as always
    assert await dispatcher_ack_floor(nc, log.tenant, partitions=2) == 2
    # A partition whose consumer is not there yet has decided nothing.
    assert await dispatcher_ack_floor(nc, log.tenant, partitions=3) == 0
