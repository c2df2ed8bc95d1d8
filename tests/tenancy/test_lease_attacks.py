"""The engines' leases (``natchet.leases``: which engine runs which tenant's dispatcher and
projector) live in a KV bucket of the engine's own account, and so do the settings every
engine shares (``natchet.partitions``: how many partitions a tenant's dispatch has). A
tenant holding a valid token can neither read nor write them: not by subscribing,
publishing, relaying a pub ack, nor through the JetStream API; and the victim's lease stays
with the engine, its partition count as recorded."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NATS

from eventstore import Append, PermissionDeniedError, append
from natchet.engine import Engine
from natchet.leases import BUCKET
from natchet.partitions import SETTINGS_BUCKET, partitions_key
from schemas import Scope, stream_name
from tests.conftest import eventually
from tests.tenancy.conftest import Attacker, Victim

pytestmark = pytest.mark.timeout(120)

STREAM = f"KV_{BUCKET}"


async def lease_of(admin_nc: NATS, key: str) -> tuple[str, int] | None:
    """(holder, revision) of ``key``, read through the engine's own account."""
    kv = await admin_nc.jetstream().key_value(BUCKET)
    entry = await kv.get(key)
    if not entry.value or entry.revision is None:
        return None
    return str(orjson.loads(entry.value)["holder"]), entry.revision


async def test_a_tenant_cannot_read_or_write_the_engines_leases(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, admin_nc: NATS
) -> None:
    assert tenancy_engine.leases is not None
    holder = tenancy_engine.leases.holder
    key = f"dispatch.{victim.tenant}"
    held = await eventually(lambda: lease_of(admin_nc, key))
    assert held[0] == holder

    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    sub = await attacker.nc.subscribe(f"$KV.{BUCKET}.>", cb=collect)
    forged = orjson.dumps({"holder": "attacker", "host": "x", "pid": 1})
    for subject in (f"$KV.{BUCKET}.{key}", f"$KV.{BUCKET}.dispatch.{attacker.tenant}"):
        with pytest.raises(PermissionDeniedError):
            await append(attacker.nc, Append(subject, forged))
        # ... nor relayed: a pub ack of its own event aimed at the lease's subject.
        await attacker.nc.publish(Scope(attacker.tenant).event("x"), b"{}", reply=subject)
    await attacker.refused(
        f"$JS.API.STREAM.INFO.{STREAM}",
        f"$JS.API.STREAM.PURGE.{STREAM}",
        f"$JS.API.STREAM.DELETE.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}.$KV.{BUCKET}.{key}",
        f"$JS.API.CONSUMER.CREATE.{STREAM}",
    )

    async def refused() -> bool:
        # nats-py lowercases the server's error line
        return any(f'subscription to "$kv.{BUCKET}.>"' in v for v in attacker.violations())

    await eventually(refused, timeout_s=5)
    await attacker.nc.flush()
    await sub.unsubscribe()
    assert got == []
    # Still the engine's, renewed (a newer revision), and its dispatcher still runs.
    after = await lease_of(admin_nc, key)
    assert after is not None and after[0] == holder and after[1] >= held[1]
    assert victim.tenant in tenancy_engine.dispatchers
    attackers = await lease_of(admin_nc, f"dispatch.{attacker.tenant}")
    assert attackers is not None and attackers[0] == holder


async def test_a_jetstream_answer_aimed_at_a_lease_does_not_land_there(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, admin_nc: NATS
) -> None:
    """A asks the JetStream API of its own log (a direct get, a message get, its stream's
    info: answers the server publishes itself, in the account that serves A's log) with the
    victim's lease subject as the reply: none of them is stored in the engine's bucket,
    and the victim's dispatcher keeps its lease."""
    assert tenancy_engine.leases is not None
    holder = tenancy_engine.leases.holder
    key = f"dispatch.{victim.tenant}"
    held = await eventually(lambda: lease_of(admin_nc, key))
    own = stream_name(attacker.tenant)
    await append(attacker.nc, Append(Scope(attacker.tenant).event("own"), b'{"x": 1}'))
    # Everything published on the lease's subject in the engine's account while A tries.
    landed: list[bytes] = []

    async def collect(msg: Any) -> None:
        landed.append(msg.data)

    reply = f"$KV.{BUCKET}.{key}"
    watch = await admin_nc.subscribe(reply, cb=collect)
    await admin_nc.flush()
    for api, body in (
        (f"$JS.API.DIRECT.GET.{own}", b'{"seq": 1}'),
        (f"$JS.API.STREAM.MSG.GET.{own}", b'{"seq": 1}'),
        (f"$JS.API.STREAM.INFO.{own}", b""),
    ):
        await attacker.nc.publish(api, body, reply=reply)
    await attacker.nc.flush()
    # A round trip through A's log after them: the server has answered them by then.
    await append(attacker.nc, Append(Scope(attacker.tenant).event("own"), b'{"x": 2}'))
    await admin_nc.flush()
    await watch.unsubscribe()
    # Only the engine's renewals (a forged answer would be a message body or an API reply).
    for data in landed:
        value = orjson.loads(data)
        assert value["holder"] == holder and set(value) == {"holder", "host", "pid"}, data
    after = await lease_of(admin_nc, key)
    assert after is not None and after[0] == holder and after[1] >= held[1]
    assert victim.tenant in tenancy_engine.dispatchers


async def test_a_tenant_cannot_read_or_write_the_partition_counts(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, admin_nc: NATS
) -> None:
    """The count of a tenant's dispatch partitions decides which dispatcher owns which
    run: a tenant rewriting it (its own or another's) could make two engines split it
    differently. The bucket is the engine's, like the leases."""
    kv = await admin_nc.jetstream().key_value(SETTINGS_BUCKET)
    key = partitions_key(victim.tenant)
    recorded = await eventually(lambda: kv.get(key))
    stream = f"KV_{SETTINGS_BUCKET}"
    got: list[Any] = []

    async def collect(msg: Any) -> None:
        got.append(msg)

    sub = await attacker.nc.subscribe(f"$KV.{SETTINGS_BUCKET}.>", cb=collect)
    for target in (key, partitions_key(attacker.tenant)):
        subject = f"$KV.{SETTINGS_BUCKET}.{target}"
        with pytest.raises(PermissionDeniedError):
            await append(attacker.nc, Append(subject, b"64"))
        await attacker.nc.publish(Scope(attacker.tenant).event("x"), b"{}", reply=subject)
    await attacker.refused(
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$JS.API.STREAM.DELETE.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.$KV.{SETTINGS_BUCKET}.{key}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
    )

    async def refused() -> bool:
        return any(f'subscription to "$kv.{SETTINGS_BUCKET}.>"' in v for v in attacker.violations())

    await eventually(refused, timeout_s=5)
    await attacker.nc.flush()
    await sub.unsubscribe()
    assert got == []
    after = await kv.get(key)
    assert (after.value, after.revision) == (recorded.value, recorded.revision)
    assert victim.tenant in tenancy_engine.dispatchers


async def test_a_tenant_cannot_pull_ack_or_drop_a_partitions_consumer_of_its_log(
    attacker: Attacker,
) -> None:
    """A split dispatch reads the log through ``dispatcher-<p>`` consumers (issue 16). A
    tenant holding a valid token must not pull from one (stealing inputs its partition would
    then never decide), ack its deliveries, nor delete or reset it: the JetStream API on its
    own log's consumers and their ack subjects are the engine's. Tried on the partition
    consumer names, whether or not the engine made them yet."""
    stream = stream_name(attacker.tenant)
    for consumer in ("dispatcher", "dispatcher-1", "dispatcher-63"):
        await attacker.refused(
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
            f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
        )
        # An ack of a delivery (stream seq 1, consumer seq 1), sent directly.
        await attacker.nc.publish(f"$JS.ACK.{stream}.{consumer}.1.1.1.0.0", b"+ACK")
    await attacker.nc.flush()

    async def refused() -> bool:
        seen = attacker.violations()
        return all(
            any(f"$js.ack.{stream}.{c}.".lower() in v.lower() for v in seen)
            for c in ("dispatcher", "dispatcher-1", "dispatcher-63")
        )

    await eventually(refused, timeout_s=5)
