"""``natchet.leases`` on a real nats-server, fast (a ttl of 3 s, a bucket per test): the
units spread over two holders, a holder that stops hands its units over at once, and one
that falls silent stops its units before another can claim them (the fence)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import attrs
import pytest

import eventstore
from eventstore import Connection
from eventstore.leasekv import LeaseBucket, LeaseStoreError
from natchet.dev.embedded import NatsServer
from natchet.leases import Leases, LeaseTiming, Unit
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(60)

FAST = LeaseTiming(ttl_s=3.0, renew_s=0.5, margin_s=1.0, spread_s=1.0)


@attrs.define
class Recorder:
    """What a holder was told, with the loop's time."""

    name: str
    log: list[tuple[float, str, str, Unit]]
    running: set[Unit] = attrs.Factory(set)

    def _note(self, what: str, unit: Unit) -> None:
        self.log.append((asyncio.get_running_loop().time(), self.name, what, unit))

    async def gained(self, unit: Unit) -> None:
        self.running.add(unit)
        self._note("gained", unit)

    def fenced(self, unit: Unit) -> None:
        self.running.discard(unit)
        self._note("fenced", unit)

    async def released(self, unit: Unit) -> None:
        await asyncio.sleep(0.05)  # a clean stop takes a moment
        self.running.discard(unit)
        self._note("released", unit)

    def leases(self, nc: Connection, timing: LeaseTiming, bucket: str) -> Leases:
        """A ``Leases`` of dispatchers on ``bucket`` that tells this recorder."""
        return Leases(
            nc,
            ("dispatch",),
            gained=self.gained,
            fenced=self.fenced,
            released=self.released,
            timing=timing,
            bucket=bucket,
        )


@attrs.define
class Holder:
    recorder: Recorder
    leases: Leases
    nc: eventstore.Connection


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[Holder, Holder, list[str]]]:
    bucket = f"leases_{uuid.uuid4().hex[:8]}"
    tenants = [f"t{uuid.uuid4().hex[:8]}" for _ in range(4)]
    log: list[tuple[float, str, str, Unit]] = []
    holders = []
    for name in ("a", "b"):
        nc = await eventstore.connect(eventstore.NatsOptions(nats_server.url, name=name))
        rec = Recorder(name, log)
        leases = rec.leases(nc, FAST, bucket)
        for t in tenants:
            leases.want(t)
        holders.append(Holder(rec, leases, nc))
    a, b = holders
    try:
        yield a, b, tenants
    finally:
        for h in holders:
            await h.leases.shutdown()
            if not h.nc.is_closed:
                await h.nc.close()


def never_two(log: list[tuple[float, str, str, Unit]]) -> None:
    """At no moment do two holders run one unit."""
    running: dict[Unit, str] = {}
    for _t, name, what, unit in sorted(log, key=lambda e: e[0]):
        if what == "gained":
            assert unit not in running, f"{unit} gained by {name} while {running[unit]} ran it"
            running[unit] = name
        elif running.get(unit) == name:
            del running[unit]


async def test_units_spread_and_a_stopped_holder_hands_over_at_once(
    pair: tuple[Holder, Holder, list[str]],
) -> None:
    a, b, _tenants = pair
    a.leases.start()
    await a.leases.settled()
    assert len(a.recorder.running) == 4  # alone: everything
    b.leases.start()
    await eventually(lambda: len(a.recorder.running) == len(b.recorder.running) == 2, timeout_s=10)
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    await a.leases.shutdown()
    await eventually(lambda: len(b.recorder.running) == 4, timeout_s=5)
    # Handed over, not expired: before the keys' last renewal could have expired (what
    # tells the two apart, whatever the machine's load).
    assert loop.time() - stopped < FAST.ttl_s - FAST.renew_s
    never_two(a.recorder.log)


async def test_a_silent_holder_stops_its_units_before_another_claims_them(
    pair: tuple[Holder, Holder, list[str]],
) -> None:
    a, b, _tenants = pair
    a.leases.start()
    await a.leases.settled()
    b.leases.start()
    await eventually(lambda: len(b.recorder.running) == 2, timeout_s=10)
    # A's connection dies (a partition, a frozen process): it can neither renew nor hand back.
    await a.nc.close()
    await eventually(lambda: len(b.recorder.running) == 4, timeout_s=10)
    assert a.recorder.running == set()
    never_two(a.recorder.log)
    fences = [e for e in a.recorder.log if e[2] == "fenced"]
    assert len(fences) == 2


async def test_a_holder_whose_renewals_failed_a_while_takes_its_lease_back_with_a_cas(
    nats_server: NatsServer, nc: eventstore.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals failing for longer than the fence allows but shorter than the ttl (a
    leader election of the bucket): the units stop, then come back to the same holder as
    soon as it can write again, without waiting for the ttl (nobody wrote the keys since)."""
    timing = LeaseTiming(ttl_s=6.0, renew_s=0.5, margin_s=3.0, spread_s=1.0)
    rec = Recorder("a", [])
    leases = rec.leases(nc, timing, f"leases_{uuid.uuid4().hex[:8]}")
    leases.want(f"t{uuid.uuid4().hex[:8]}")
    async with leases:
        await leases.settled()
        assert len(rec.running) == 1
        loop = asyncio.get_running_loop()
        update = LeaseBucket.update
        broken_until = loop.time() + timing.ttl_s - timing.margin_s + 0.5

        async def flaky(self: LeaseBucket, key: str, value: bytes, last: int) -> int | None:
            if loop.time() < broken_until:
                raise LeaseStoreError("no leader")
            return await update(self, key, value, last)

        monkeypatch.setattr(LeaseBucket, "update", flaky)
        await eventually(lambda: not rec.running, timeout_s=timing.ttl_s)
        fenced_at = loop.time()
        await eventually(lambda: rec.running, timeout_s=timing.ttl_s)
        # Taken back by the CAS, not claimed after an expiry: before the key could have
        # expired, ``margin_s`` after the fence.
        assert loop.time() - fenced_at < timing.margin_s
    assert [what for _t, _n, what, _u in rec.log] == ["gained", "fenced", "gained", "released"]
