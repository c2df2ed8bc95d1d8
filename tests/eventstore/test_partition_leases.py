"""Partitions of a tenant's dispatch under the leases (issue 16), on a real nats-server: the
count every engine agrees on (the first engine's, kept without a ttl), and the partitions
spread over engines like any other units."""

from __future__ import annotations

import logging
import uuid

import pytest

import eventstore
from eventstore import ConfigError, Connection
from eventstore.leasekv import LeaseBucket
from natchet.dev.embedded import NatsServer
from natchet.leases import Leases, Unit
from natchet.partitions import PartitionCounts, partitions_key
from tests.conftest import eventually
from tests.eventstore.test_leases import FAST, Recorder, never_two

pytestmark = pytest.mark.timeout(60)


def bucket_name(what: str) -> str:
    return f"{what}_{uuid.uuid4().hex[:8]}"


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def test_the_first_engines_count_is_recorded_and_every_engine_uses_it(
    nc: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    bucket, t = bucket_name("settings"), tenant()
    first = PartitionCounts(nc, bucket=bucket)
    assert await first.agree(t, 4) == 4
    assert await first.agree(t, 4) == 4  # again (a restart): the same, nothing said
    other = PartitionCounts(nc, bucket=bucket)  # another engine, set otherwise
    with caplog.at_level(logging.WARNING, logger="natchet.partitions"):
        assert await other.agree(t, 2) == 4
    said = [r.getMessage() for r in caplog.records if r.name == "natchet.partitions"]
    assert len(said) == 1 and "4 partitions" in said[0] and "(2) is not used" in said[0]
    # Per tenant: another tenant gets the setting of whoever comes first.
    assert await other.agree(tenant(), 2) == 2


async def test_the_count_never_expires_while_leases_do(nc: Connection) -> None:
    """The leases' bucket drops a key its ttl after its last write; the count's bucket
    has no ttl at all, so it outlives every engine (a deploy stopping them all)."""
    bucket, t = bucket_name("settings"), tenant()
    assert await PartitionCounts(nc, bucket=bucket).agree(t, 3) == 3
    info = await nc.jetstream().stream_info(f"KV_{bucket}")
    assert not info.config.max_age  # 0: kept for ever
    leases = await LeaseBucket.open(nc, bucket_name("leases"), ttl_s=1.0)
    await leases.put("dispatch.x", b"{}")

    async def expired() -> bool:
        return await leases.get("dispatch.x") is None

    await eventually(expired, timeout_s=10)
    kept = await LeaseBucket.open(nc, bucket, ttl_s=None)
    seen = await kept.get(partitions_key(t))
    assert seen is not None and seen.value == b"3"
    assert await kept.ttl_s() is None


async def test_a_count_that_is_no_count_stops_the_tenant_and_a_deleted_one_is_set_again(
    nc: Connection,
) -> None:
    bucket, t = bucket_name("settings"), tenant()
    counts = PartitionCounts(nc, bucket=bucket)
    await counts.agree(t, 2)
    raw = await nc.jetstream().key_value(bucket)
    for bad in (b"many", b"0", b"65"):
        await raw.put(partitions_key(t), bad)
        with pytest.raises(ConfigError, match=partitions_key(t)):
            await counts.agree(t, 2)
    await raw.delete(partitions_key(t))  # an operator's reset: the next setting is recorded
    assert await counts.agree(t, 5) == 5
    assert await PartitionCounts(nc, bucket=bucket).agree(t, 1) == 5


async def test_a_tenant_an_engine_dispatches_whole_is_recorded_whole(
    nc: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine that records no count (an earlier release, leases off) holds dispatch.<t>:
    splitting that tenant beside it would run two dispatchers on the same runs."""
    settings, leases = bucket_name("settings"), bucket_name("leases")
    held, free = tenant(), tenant()
    # No lease bucket at all (a first engine): the setting, and nothing created.
    counts = PartitionCounts(nc, bucket=settings, leases=leases)
    assert await counts.agree(tenant(), 4) == 4
    assert await LeaseBucket.find(nc, leases) is None
    kv = await LeaseBucket.open(nc, leases, ttl_s=FAST.ttl_s)
    await kv.put(Unit(held, "dispatch").key, b'{"holder": "older"}')
    with caplog.at_level(logging.WARNING, logger="natchet.partitions"):
        assert await counts.agree(held, 4) == 1
    assert any("holds it whole" in r.getMessage() for r in caplog.records)
    assert await counts.agree(free, 4) == 4
    # Recorded: the whole lease going away changes nothing (only an operator does).
    await kv.delete(Unit(held, "dispatch").key, (await kv.get(Unit(held, "dispatch").key)).revision)
    assert await PartitionCounts(nc, bucket=settings, leases=leases).agree(held, 4) == 1


async def test_two_engines_hold_one_partition_each_of_one_tenant(
    nats_server: NatsServer,
) -> None:
    """Fair share counts keys: a tenant in two partitions is two units, one per engine."""
    bucket, t = bucket_name("leases"), tenant()
    log: list[tuple[float, str, str, Unit]] = []
    holders: list[tuple[Recorder, Leases, Connection]] = []
    try:
        for name in ("a", "b"):
            conn = await eventstore.connect(eventstore.NatsOptions(nats_server.url, name=name))
            rec = Recorder(name, log)
            leases = rec.leases(conn, FAST, bucket)
            leases.want(t, partitions=2)
            holders.append((rec, leases, conn))
        (a, a_leases, _), (b, b_leases, _) = holders
        a_leases.start()
        await a_leases.settled()
        assert a.running == {Unit(t, "dispatch", 0), Unit(t, "dispatch", 1)}  # alone: both
        b_leases.start()
        await eventually(lambda: len(a.running) == len(b.running) == 1, timeout_s=10)
        assert a.running | b.running == {Unit(t, "dispatch", 0), Unit(t, "dispatch", 1)}
        # The bucket says the same: each partition's key names its engine.
        kv = await LeaseBucket.open(holders[0][2], bucket, ttl_s=FAST.ttl_s)
        for unit in a.running | b.running:
            seen = await kv.get(unit.key)
            holder = a_leases if unit in a.running else b_leases
            assert seen is not None and seen.value is not None
            assert holder.holder.encode() in seen.value
        assert await kv.get(f"dispatch.{t}") is None  # no whole unit beside them
        await a_leases.shutdown()
        await eventually(lambda: len(b.running) == 2, timeout_s=5)
        never_two(log)
    finally:
        for _rec, leases, conn in holders:
            await leases.shutdown()
            await conn.close()
