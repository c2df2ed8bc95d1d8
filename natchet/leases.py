"""Which engine runs what: a lease per unit of work, in a JetStream KV bucket.

Several ``natchet engine`` processes may serve the same tenants (docs/scaling.md, "Several
engines per tenant"). A unit of work, a :class:`Unit`, is one tenant's dispatcher or one
tenant's projector, or one partition of a tenant's dispatch (one more key each). An
engine runs a unit only while it holds the unit's lease: the key ``<component>.<tenant>``
(``dispatch.<tenant>.<part>`` for a partition) of the bucket ``natchet_leases``, in the
engine's own NATS account (no tenant reaches it).

Nothing here is home-made consensus; the server's per-subject sequence does the deciding:

- **Claim**: ``create`` (stored only if the key has no value: expected last subject
  sequence 0, or the revision of its delete marker). One engine wins.
- **Renew**: every ``renew_s``, ``update(key, last=revision)``: stored only if nobody wrote
  the key since. A refused renewal means the lease is gone: the unit stops at once.
- **Expire**: the bucket's ``ttl`` (the stream's ``max_age``): a revision not renewed is
  removed by the server ``ttl`` after it was stored, and the server leaves a marker
  (``limit_marker_ttl``) that every engine's watcher sees, so another engine claims the key
  at once. A watcher that missed it still tries, once the key has been silent for ``ttl``.
- **Fence**: the holder stops the unit by itself ``ttl - margin_s`` after it *sent* its
  last renewal that was stored. The server stored it after it was sent, so it expires it
  no sooner than ``ttl`` after the send: the holder has stopped ``margin_s`` before anybody
  else can claim the key (given the server's clock does not jump and the holder's does not
  stall past ``margin_s`` between the check and its last append; docs/scaling.md).
- **Release**: on shutdown (SIGTERM) the holder stops each unit, then deletes its key (with
  ``last=revision``); the other engines' watchers see the delete and claim at once.
- **Spread**: each engine keeps a presence key (``engines.<holder>``) alive the same way.
  An engine claims free units only up to its fair share (units / live engines, rounded
  up), takes any unit left free for ``spread_s`` whatever its share, and hands back (a
  release) one unit per round while it holds more than its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson

from dispatcher.partition import MAX_PARTITIONS
from eventstore import Connection, Service
from eventstore.leasekv import KeySeen, LeaseBucket, LeaseStoreError
from schemas.subjects import TENANT_RE

log = logging.getLogger(__name__)

BUCKET = "natchet_leases"
ENGINES = "engines"  # presence keys: engines.<holder>
COMPONENTS = ("dispatch", "project")


def _part_order(part: int | None) -> int:
    return -1 if part is None else part


@attrs.frozen(order=True)
class Unit:
    """One unit of work one engine at a time runs: a tenant's projector, its dispatcher, or
    (``part`` set) one partition of its dispatch (issue 16, ``dispatcher.partition``).

    Its lease is the key ``<component>.<tenant>``, and ``dispatch.<tenant>.<part>`` for a
    partition: a tenant whose dispatch is not split keeps the key it always had (engines
    of an older release read it). Tenant names never contain '.' (``TENANT_RE``), so the
    two forms cannot be confused. A partition's key does not say how many partitions its
    tenant has: that count is agreed per tenant elsewhere (``natchet.partitions``), and the
    leases only need each key to stand for one unit (the fair share counts keys)."""

    tenant: str
    component: str  # "dispatch" or "project"
    # None: the tenant's whole dispatch (or its projector); p: partition p of its dispatch.
    part: int | None = attrs.field(default=None, order=_part_order)

    def __attrs_post_init__(self) -> None:
        if self.part is None:
            return
        if self.component != "dispatch":
            raise ValueError(f"only dispatch has partitions, not {self.component}")
        if not 0 <= self.part < MAX_PARTITIONS:
            raise ValueError(f"partition {self.part} is not one of 0 to {MAX_PARTITIONS - 1}")

    @property
    def key(self) -> str:
        whole = f"{self.component}.{self.tenant}"
        return whole if self.part is None else f"{whole}.{self.part}"

    @classmethod
    def of_key(cls, key: str) -> Unit | None:
        """The unit whose lease ``key`` is; None for any other key of the bucket (presence
        keys ``engines.<holder>``, anything malformed or not in canonical form)."""
        component, _, rest = key.partition(".")
        tenant, dot, part = rest.partition(".")
        if component not in COMPONENTS or not TENANT_RE.fullmatch(tenant):
            return None
        if not dot:
            return cls(tenant, component)
        if not part.isdecimal():
            return None
        try:
            unit = cls(tenant, component, int(part))
        except ValueError:
            return None
        return unit if unit.key == key else None  # "dispatch.t.01" is nobody's

    @classmethod
    def units(cls, tenant: str, component: str, partitions: int = 1) -> list[Unit]:
        """``tenant``'s units of ``component``: one, or a dispatch of ``partitions``."""
        if partitions == 1:
            return [cls(tenant, component)]
        if component != "dispatch" or not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"{component} of {tenant} cannot have {partitions} partitions")
        return [cls(tenant, component, p) for p in range(partitions)]


@attrs.frozen
class LeaseTiming:
    """``ttl_s``: a lease not renewed for this long is free (the bucket's ``max_age``; an
    existing bucket's own value wins, so every engine fences on the same one).
    ``renew_s``: how often a holder renews. ``margin_s``: how long before the server could
    expire a lease its holder stops the unit. ``spread_s``: how long a free unit waits for
    an engine under its fair share before any engine takes it."""

    ttl_s: float = 8.0
    renew_s: float = 2.0
    margin_s: float = 2.0
    spread_s: float = 3.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.renew_s < self.ttl_s - self.margin_s:
            raise ValueError(f"a lease must be renewed well within its ttl: {self}")


@attrs.define
class _Held:
    revision: int
    fence: asyncio.TimerHandle | None = None


@attrs.define
class _Seen:
    """The bucket as this engine's watcher last saw a key: whose, and when (local time)."""

    holder: str
    components: tuple[str, ...]
    at: float


Gained = Callable[[Unit], Awaitable[None]]
Fenced = Callable[[Unit], None]
Released = Callable[[Unit], Awaitable[None]]


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end, cancelling it again if a cancellation was
    lost: before Python 3.12, ``asyncio.wait_for`` (which nats-py's watcher waits in) can
    swallow one that arrives as its inner future completes, and an engine stopped just
    after it started (its watcher taking the bucket's first values) then never stopped."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.warning("leases: the watcher ended with %r", task.exception())


def new_holder() -> str:
    """An engine's name in the bucket: unique per process start."""
    return uuid.uuid4().hex[:16]


class Leases(Service):
    """Holds the leases of the units this engine wants (:meth:`want`) that it wins, and
    calls ``gained`` (start the unit), ``fenced`` (stop it now: the lease is or may be
    gone; synchronous, so nothing runs in between) and ``released`` (stop it gracefully:
    the lease is handed back once it returns)."""

    name = "leases"
    grace_s = 30.0

    def __init__(
        self,
        nc: Connection,
        components: tuple[str, ...],
        *,
        gained: Gained,
        fenced: Fenced,
        released: Released,
        timing: LeaseTiming | None = None,
        replicas: int = 1,
        holder: str | None = None,
        bucket: str = BUCKET,
    ) -> None:
        super().__init__()
        self.nc = nc
        self.bucket = bucket
        self.components = components
        self.holder = holder or new_holder()
        self.timing = timing or LeaseTiming()
        self.replicas = replicas
        self._gained, self._fenced, self._released = gained, fenced, released
        self.wanted: set[Unit] = set()
        self.held: dict[Unit, _Held] = {}
        self._seen: dict[str, _Seen] = {}  # key -> last value seen
        self._free_since: dict[Unit, float] = {}
        # Units fenced at this revision: if the key is still at it (NATS was away, say a
        # leader election, and came back before the ttl), nobody claimed it since, and
        # this engine takes it back with a CAS instead of waiting for it to expire.
        self._lapsed: dict[Unit, int] = {}
        self._wake = asyncio.Event()
        self._rounds = 0  # rounds ended
        self._rounds_begun = 0
        self._round_done = asyncio.Condition()
        who = {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid()}
        self._value = orjson.dumps(who)
        self._presence = orjson.dumps({**who, "components": list(components)})
        self._presence_rev = 0

    def want(self, tenant: str, partitions: int = 1) -> None:
        """Compete for ``tenant``'s units of this engine's components: its projector, and
        its dispatch whole or, with ``partitions`` > 1, each of that many partitions (every
        engine must want the same count of a tenant: ``natchet.partitions``)."""
        for component in self.components:
            parts = partitions if component == "dispatch" else 1
            self.wanted.update(Unit.units(tenant, component, parts))
        self._wake.set()

    def owned(self) -> list[Unit]:
        return sorted(self.held)

    async def settled(self) -> None:
        """Return once a whole round has run after this call (what the engine waits for
        before it says it is up): the next one to begin. Not the one after a round in
        progress: called before the first round (an engine starting), that waited out a
        whole ``renew_s`` for nothing."""
        async with self._round_done:
            target = self._rounds_begun + 1
            self._wake.set()
            await self._round_done.wait_for(lambda: self._rounds >= target)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        kv = await LeaseBucket.open(
            self.nc,
            self.bucket,
            ttl_s=self.timing.ttl_s,
            replicas=self.replicas,
            description="natchet: which engine runs which tenant's dispatcher and projector",
        )
        ttl = await kv.ttl_s()
        if ttl is not None and abs(ttl - self.timing.ttl_s) > 0.001:
            log.info("leases: the bucket's ttl is %.1fs; using it", ttl)
            t = self.timing
            self.timing = attrs.evolve(
                t, ttl_s=ttl, renew_s=min(t.renew_s, ttl / 4), margin_s=min(t.margin_s, ttl / 4)
            )
        watching = asyncio.create_task(self._watch(kv))
        try:
            while not self.stopping.is_set():
                self._wake.clear()
                self._rounds_begun += 1
                await self._round(kv, loop.time())
                async with self._round_done:
                    self._rounds += 1
                    self._round_done.notify_all()
                wake = asyncio.ensure_future(self._wake.wait())
                with contextlib.suppress(TimeoutError):
                    await self.until_stopping(asyncio.wait_for(wake, self.timing.renew_s))
        finally:
            await cancel_and_wait(watching)
            await self._release_all(kv)

    async def _watch(self, kv: LeaseBucket) -> None:
        loop = asyncio.get_running_loop()
        async for seen in kv.watch():
            self._saw(seen, loop.time())

    def _saw(self, entry: KeySeen, now: float) -> None:
        key = entry.key
        unit = Unit.of_key(key)
        # A change older than what this engine stored (a marker it claimed over, delivered
        # late) says nothing about its lease.
        mine = self.held.get(unit) if unit is not None else None
        stale = mine is not None and entry.revision <= mine.revision
        if entry.value is None:
            self._seen.pop(key, None)
            if unit is not None and mine is not None and not stale:
                self._fence(unit, "the server expired it")
            elif unit in self.wanted:
                self._wake.set()  # a lease handed back or expired: claim it now
            return
        try:
            value: dict[str, Any] = orjson.loads(entry.value)
            holder = str(value["holder"])
            components = tuple(str(c) for c in value.get("components", ()))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("leases: unreadable value of %s ignored", key)
            return
        self._seen[key] = _Seen(holder, components, now)
        if unit is not None and mine is not None and not stale and holder != self.holder:
            self._fence(unit, "another engine holds it")  # cannot be, unless expired

    async def _round(self, kv: LeaseBucket, now: float) -> None:
        await self._keep_presence(kv)
        for unit in list(self.held):
            await self._renew(kv, unit)
        for component in self.components:
            await self._balance(kv, component, now)

    async def _keep_presence(self, kv: LeaseBucket) -> None:
        try:
            self._presence_rev = await kv.put(f"{ENGINES}.{self.holder}", self._presence)
        except LeaseStoreError as exc:
            log.warning("leases: could not say this engine is alive: %s", exc)

    async def _renew(self, kv: LeaseBucket, unit: Unit) -> None:
        held = self.held.get(unit)
        if held is None:
            return
        sent = asyncio.get_running_loop().time()
        try:
            revision = await kv.update(unit.key, self._value, held.revision)
        except LeaseStoreError as exc:
            log.warning("leases: could not renew %s: %s", unit.key, exc)
            return
        if revision is None:
            self._fence(unit, "it expired or was taken (renewal refused)")
            return
        if unit in self.held:  # not fenced while waiting
            self._stored(unit, revision, sent)

    def _stored(self, unit: Unit, revision: int, sent: float) -> None:
        """``unit``'s lease stored at ``revision`` by a request sent at ``sent``: the unit
        may run until ``sent + ttl - margin``."""
        held = self.held.setdefault(unit, _Held(revision))
        held.revision = revision
        if held.fence is not None:
            held.fence.cancel()
        t = self.timing
        held.fence = asyncio.get_running_loop().call_at(
            sent + t.ttl_s - t.margin_s, self._fence, unit, "not renewed in time"
        )

    def _fence(self, unit: Unit, why: str) -> None:
        held = self.held.pop(unit, None)
        if held is None:
            return
        if held.fence is not None:
            held.fence.cancel()
        self._lapsed[unit] = held.revision
        log.warning("leases: lost %s (%s): stopping it", unit.key, why)
        self._fenced(unit)
        self._wake.set()

    def _engines(self, component: str, now: float) -> int:
        """Live engines competing for ``component``'s units (this one included)."""
        live = {
            s.holder
            for key, s in self._seen.items()
            if key.startswith(f"{ENGINES}.")
            and component in s.components
            and now - s.at < self.timing.ttl_s
        }
        return len(live | {self.holder})

    def _owner(self, unit: Unit, now: float) -> str | None:
        """Who holds ``unit`` as far as this engine saw (None: free, or silent a ttl)."""
        seen = self._seen.get(unit.key)
        if seen is None or now - seen.at >= self.timing.ttl_s:
            return None
        return seen.holder

    async def _balance(self, kv: LeaseBucket, component: str, now: float) -> None:
        units = {u for u in self.wanted if u.component == component}
        units |= {u for key in self._seen if (u := Unit.of_key(key)) and u.component == component}
        share = math.ceil(len(units) / self._engines(component, now)) if units else 0
        mine = [u for u in self.held if u.component == component]
        for unit in sorted(u for u in self.wanted if u.component == component):
            if unit in self.held or self.stopping.is_set():
                continue
            if self._owner(unit, now) not in (None, self.holder):
                self._free_since.pop(unit, None)
                continue
            since = self._free_since.setdefault(unit, now)
            if len(mine) >= share and now - since < self.timing.spread_s:
                continue  # leave it to an engine under its share, for a while
            if await self._claim(kv, unit):
                mine.append(unit)
                self._free_since.pop(unit, None)
        if len(mine) > share and not self.stopping.is_set():
            # More than a fair share (an engine joined): hand the rest back.
            for unit in sorted(mine)[share:]:
                await self._release(kv, unit)

    async def _claim(self, kv: LeaseBucket, unit: Unit) -> bool:
        sent = asyncio.get_running_loop().time()
        lapsed = self._lapsed.pop(unit, None)
        try:
            revision = None
            if lapsed is not None:
                revision = await kv.update(unit.key, self._value, lapsed)
            if revision is None:
                revision = await kv.create(unit.key, self._value)
        except LeaseStoreError as exc:
            if lapsed is not None:
                self._lapsed[unit] = lapsed  # try again next round
            log.warning("leases: could not claim %s: %s", unit.key, exc)
            return False
        if revision is None:
            return False  # another engine holds it
        self._stored(unit, revision, sent)
        log.info("leases: took %s", unit.key)
        try:
            await self._gained(unit)
        except Exception:
            log.exception("leases: starting %s failed; handing it back", unit.key)
            await self._release(kv, unit)
            return False
        return True

    async def _release(self, kv: LeaseBucket, unit: Unit) -> None:
        """Stop ``unit``, then hand its lease back (the delete wakes the other engines)."""
        if unit not in self.held:
            return
        # The fence stays armed: a stop slower than the lease's time left is cut short.
        await self._released(unit)
        held = self.held.pop(unit, None)
        if held is None:
            return  # fenced while stopping (it had expired): nothing to hand back
        if held.fence is not None:
            held.fence.cancel()
        try:
            if await kv.delete(unit.key, held.revision):
                log.info("leases: handed %s back", unit.key)
        except LeaseStoreError as exc:
            log.warning("leases: could not hand %s back (it expires): %s", unit.key, exc)

    async def _release_all(self, kv: LeaseBucket) -> None:
        await asyncio.gather(*(self._release(kv, u) for u in list(self.held)))
        with contextlib.suppress(LeaseStoreError):
            await kv.delete(f"{ENGINES}.{self.holder}", self._presence_rev)
