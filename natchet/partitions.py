"""How many partitions each tenant's dispatch has (issue 16): one count per tenant, the same
in every engine.

Engines that split a tenant differently would run overlapping units: partition 1 of 2 and
partition 1 of 3 read the same consumer (``dispatcher-1``), hold different leases
(``dispatch.<t>.1`` is one key, but partition 2 of 3 has no counterpart) and own different
runs. So the count is recorded per tenant, once: the first engine to record it wins
(a create, stored only if the key has no value), and every engine, that one included,
dispatches the tenant with the recorded count. An engine whose own setting
(``NATCHET_DISPATCH_PARTITIONS``) differs says so in one line and uses the recorded one.

Where: the key ``partitions.<tenant>`` of the KV bucket ``natchet_settings`` (history 1,
the engine's replicas), in the engine's own NATS account like the leases (no tenant
reaches it), **without a TTL**. Not in the leases bucket, whose keys expire 8 s after
their last write (its ``max_age`` is the leases' ttl): the count must outlive every
engine, because it names durable things (each partition's consumer and snapshots), and a
deployment that stops all its engines must not let the next one to start split the tenant
another way. Re-writing it every round like a presence key would keep it only while some
engine runs. A second bucket costs one more small stream; the system stream
(``natchet-system``, the tenants' records) would also keep it, but it is a log of what an
operator did, folded by every engine, and "the first engine's setting" is no such record.

Engines that record no count (an earlier release, or ``NATCHET_LEASES=0``) dispatch a
tenant whole, under the lease ``dispatch.<t>``, which no partition's lease excludes. So the
first count recorded for a tenant is 1, whatever the setting, while such an engine holds
``dispatch.<t>`` (a rolling upgrade that turns partitions on at the same time would
otherwise split a tenant that an older engine still dispatches whole). Engines of this
release with a count of 1 recorded hold the same key; they never reach that check.

Changing a tenant's count is an operator's act: stop every engine that dispatches it,
then ``nats kv put natchet_settings partitions.<t> <n>`` (or ``nats kv del``, and the next
engine's setting is recorded), in the engine's account.
"""

from __future__ import annotations

import asyncio
import logging

from eventstore import ConfigError, Connection
from eventstore.leasekv import LeaseBucket, LeaseStoreError
from natchet.config import partitions_from
from natchet.leases import BUCKET, Unit

log = logging.getLogger(__name__)

SETTINGS_BUCKET = "natchet_settings"
PREFIX = "partitions"  # keys: partitions.<tenant>
ATTEMPTS = 3  # a create refused, then the key gone before it was read: try again


def partitions_key(tenant: str) -> str:
    return f"{PREFIX}.{tenant}"


def parse_count(value: bytes, where: str) -> int:
    """A recorded count: a decimal number of partitions, 1 to ``MAX_PARTITIONS``."""
    text = value.decode(errors="replace").strip()
    if not text:
        raise ConfigError(f"{where}: not a number of partitions: {text!r}")
    return partitions_from(text, where)


class PartitionCounts:
    """The partition counts of the tenants this engine dispatches, as recorded in
    ``bucket`` (created on first use with ``replicas``); ``leases``: the bucket of the
    leases, read (never created) for a tenant dispatched whole."""

    def __init__(
        self,
        nc: Connection,
        *,
        replicas: int = 1,
        bucket: str = SETTINGS_BUCKET,
        leases: str = BUCKET,
    ):
        self.nc = nc
        self.replicas = replicas
        self.bucket = bucket
        self.leases = leases
        self._kv: LeaseBucket | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> LeaseBucket:
        async with self._opening:
            if self._kv is None:
                self._kv = await LeaseBucket.open(
                    self.nc,
                    self.bucket,
                    ttl_s=None,
                    replicas=self.replicas,
                    description="natchet: settings every engine must share (per tenant: "
                    "the partitions of its dispatch)",
                )
            return self._kv

    async def agree(self, tenant: str, setting: int) -> int:
        """``tenant``'s count: the one recorded, or ``setting``, recorded now if none was.
        Raises :class:`LeaseStoreError` when the bucket does not answer, and
        :class:`ConfigError` when what it holds is no count (an operator's typo: fixed
        by hand, never overwritten here)."""
        kv = await self._open()
        key = partitions_key(tenant)
        where = f"{self.bucket} {key}"
        for _ in range(ATTEMPTS):
            first = 1 if setting > 1 and await self._dispatched_whole(tenant) else setting
            if await kv.create(key, str(first).encode()) is not None:
                if first != setting:
                    log.warning(
                        "dispatch of %s: an engine holds it whole (dispatch.%s; an earlier "
                        "release, or leases off): 1 partition recorded in %s, not this "
                        "engine's %d; to split it, stop every engine and put the count there",
                        tenant,
                        tenant,
                        where,
                        setting,
                    )
                elif setting > 1:
                    log.info(
                        "dispatch of %s: %d partitions (recorded in %s)", tenant, setting, where
                    )
                return first
            seen = await kv.get(key)
            if seen is not None and seen.value is not None:
                break
        else:
            raise LeaseStoreError(f"{where}: neither recorded nor readable")
        count = parse_count(seen.value, where)
        if count != setting:
            log.warning(
                "dispatch of %s: %d partitions, as recorded in %s by the first engine; this "
                "engine's setting (%d) is not used",
                tenant,
                count,
                where,
                setting,
            )
        return count

    async def _dispatched_whole(self, tenant: str) -> bool:
        """Whether an engine holds ``tenant``'s whole-dispatch lease now."""
        leases = await LeaseBucket.find(self.nc, self.leases)
        return leases is not None and await leases.get(Unit(tenant, "dispatch").key) is not None
