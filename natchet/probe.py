"""Looking at a running engine from outside its components: the gauges of a scrape, and
whether it is ready.

Everything here is read from the servers at the moment asked, never from the components'
memory: queue depth and pending tasks from each workflow's queue group (its pull consumer),
worker slots from the workers' heartbeats, the dispatcher's lag from its consumer's ack
floor (a partitioned dispatch: the partition furthest behind), the projector's from its
checkpoint in Postgres, each against the end of the log. So one engine process can report
on a projector that runs in another (``natchet engine``'s child), and what it reports is
what an operator would find by asking the servers.

Ready (``/ready``) means, for every tenant served: NATS connected, Postgres answering, and
the dispatcher and the projector each caught up to within ``max_lag_s`` seconds: the oldest
message of the log either has not yet handled was stored at most that long ago.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import psycopg

from eventstore import (
    Connection,
    NatchetError,
    connected,
    dispatcher_ack_floor,
    heartbeats,
    last_seq,
    stored_at,
    task_queues,
)
from natchet.leases import Unit
from natchet.liveness import alive
from natchet.metrics import Sampled
from projector import read_checkpoint
from schemas import WorkerHeartbeat
from schemas.codec import DecodeError, decode_as

log = logging.getLogger(__name__)

DEFAULT_MAX_LAG_S = 30.0
TIMEOUT_S = 3.0  # per question to a server: a scrape or a readiness check answers in time

T = TypeVar("T")


class _Restoring(Protocol):
    @property
    def ready(self) -> asyncio.Event: ...


class EngineView(Protocol):
    """What the probe reads of an engine (``natchet.engine.Engine``)."""

    @property
    def ready(self) -> asyncio.Event: ...
    @property
    def nc(self) -> Connection | None: ...
    @property
    def connections(self) -> Mapping[str, Connection]: ...
    @property
    def dispatchers(self) -> Mapping[str, _Restoring]: ...
    @property
    def dispatch(self) -> Mapping[Unit, _Restoring]: ...
    @property
    def partitions(self) -> Mapping[str, int]: ...
    @property
    def projectors(self) -> Mapping[str, object]: ...
    @property
    def database_url(self) -> str: ...


@attrs.frozen
class Check:
    name: str  # nats, postgres, dispatcher, projector, engine
    ok: bool
    detail: str = ""


@attrs.frozen
class Report:
    """One look: the gauges, and each readiness check (failed ones first)."""

    sampled: Sampled
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks)


@attrs.define
class _Lag:
    messages: int
    seconds: float


class Probe:
    """Looks at ``engine``: its tenants' queues, workers and lags, and its servers.
    ``dispatcher`` / ``projector``: whether this process answers for that component's lag
    (the projector's: also when a child process runs it)."""

    def __init__(
        self,
        engine: EngineView,
        *,
        dispatcher: bool,
        projector: bool,
        max_lag_s: float = DEFAULT_MAX_LAG_S,
    ) -> None:
        self.engine = engine
        self.watch_dispatcher = dispatcher
        self.watch_projector = projector
        self.max_lag_s = max_lag_s
        self._lock = asyncio.Lock()

    def tenants(self) -> list[str]:
        return sorted({*self.engine.dispatchers, *self.engine.projectors})

    async def look(self) -> Report:
        """Sample every tenant served, and check readiness (one look at a time)."""
        async with self._lock:
            return await self._look()

    async def _look(self) -> Report:
        engine = self.engine
        sampled = Sampled()
        checks: list[Check] = []
        if not engine.ready.is_set():
            checks.append(Check("engine", False, "still starting"))
        nc = engine.nc
        if nc is None or not connected(nc):
            checks.append(Check("nats", False, "not connected to NATS"))
        checkpoints, pg_error = await self._checkpoints()
        checks.append(Check("postgres", pg_error is None, pg_error or ""))
        results = await asyncio.gather(
            *(self._tenant(t, sampled, checkpoints) for t in self.tenants())
        )
        for tenant_checks in results:
            checks.extend(tenant_checks)
        if not any(c.name == "nats" for c in checks):
            checks.append(Check("nats", True))
        for name in ("dispatcher", "projector"):
            if not any(c.name == name for c in checks):
                checks.append(Check(name, True))
        checks.sort(key=lambda c: (c.ok, c.name))
        return Report(sampled, tuple(_merge(checks)))

    async def _checkpoints(self) -> tuple[dict[str, int], str | None]:
        """Each tenant's projector checkpoint; or why Postgres could not be read."""
        out: dict[str, int] = {}
        try:
            async with await psycopg.AsyncConnection.connect(
                self.engine.database_url,
                connect_timeout=int(TIMEOUT_S),
                application_name="natchet-probe",
            ) as conn:
                await conn.execute("SELECT 1")
                if self.watch_projector:
                    for tenant in self.tenants():
                        out[tenant] = await read_checkpoint(conn, tenant)
        except (psycopg.Error, OSError) as exc:
            return out, f"Postgres: {_one_line(exc)}"
        return out, None

    async def _tenant(
        self, tenant: str, sampled: Sampled, checkpoints: dict[str, int]
    ) -> list[Check]:
        engine = self.engine
        checks: list[Check] = []
        conn = engine.connections.get(tenant)
        if conn is None or not connected(conn):
            checks.append(Check("nats", False, f"tenant {tenant}: not connected to its log"))
            return [*checks, *self._unknown(tenant, "NATS is not connected")]
        try:
            end = await _timed(last_seq(conn, tenant))
            await self._queues(conn, tenant, sampled)
            await self._slots(conn, tenant, sampled)
            if self.watch_dispatcher:
                # A partitioned dispatch: the partition furthest behind, wherever it runs.
                partitions = engine.partitions.get(tenant, 1)
                floor = await _timed(dispatcher_ack_floor(conn, tenant, partitions))
                lag = await _lag(conn, tenant, floor, end)
                sampled.dispatcher_lag[tenant] = (lag.messages, lag.seconds)
                here = [d for u, d in engine.dispatch.items() if u.tenant == tenant]
                if any(not d.ready.is_set() for d in here):
                    checks.append(Check("dispatcher", False, f"tenant {tenant}: restoring state"))
                else:
                    checks.append(self._caught_up("dispatcher", tenant, lag))
        except (NatchetError, TimeoutError) as exc:
            detail = _one_line(exc) or "NATS did not answer in time"
            return [*checks, *self._unknown(tenant, detail)]
        if self.watch_projector:
            checkpoint = checkpoints.get(tenant)
            if checkpoint is None:
                checks.append(Check("projector", False, f"tenant {tenant}: checkpoint unknown"))
            else:
                try:
                    lag = await _lag(conn, tenant, checkpoint, end)
                except (NatchetError, TimeoutError) as exc:
                    return [*checks, *self._unknown(tenant, _one_line(exc))]
                sampled.projector_lag[tenant] = (lag.messages, lag.seconds)
                checks.append(self._caught_up("projector", tenant, lag))
        return checks

    def _unknown(self, tenant: str, why: str) -> list[Check]:
        names = [n for n, on in (("dispatcher", self.watch_dispatcher),) if on]
        names += ["projector"] if self.watch_projector else []
        return [Check(n, False, f"tenant {tenant}: lag unknown ({why})") for n in names]

    def _caught_up(self, name: str, tenant: str, lag: _Lag) -> Check:
        if lag.seconds <= self.max_lag_s:
            return Check(name, True)
        return Check(
            name,
            False,
            f"tenant {tenant}: {lag.messages} messages behind, the oldest {lag.seconds:.0f}s "
            f"old (bound {self.max_lag_s:g}s)",
        )

    async def _queues(self, conn: Connection, tenant: str, sampled: Sampled) -> None:
        for q in await _timed(task_queues(conn, tenant)):
            sampled.pending[tenant, q.namespace, q.workflow] = q.pending
            key = (tenant, q.namespace)
            sampled.queue_depth[key] = sampled.queue_depth.get(key, 0) + q.pending

    async def _slots(self, conn: Connection, tenant: str, sampled: Sampled) -> None:
        """Slots of the workers alive now (``natchet.liveness.alive``),
        per namespace; a namespace with none shows 0 while its heartbeats are kept."""
        records = await _timed(heartbeats(conn, tenant))
        now = dt.datetime.now(dt.UTC)
        for rec in records:
            try:
                hb = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
            except DecodeError:
                continue
            key = (tenant, rec.subject.split(".")[1])
            total, used = sampled.slots.get(key, (0, 0))
            if alive(hb, now):
                total, used = total + hb.slots, used + min(hb.running, hb.slots)
            sampled.slots[key] = (total, used)


async def _lag(conn: Connection, tenant: str, done: int, end: int) -> _Lag:
    """How far behind ``end`` a reader that handled everything up to ``done`` is."""
    behind = max(end - done, 0)
    if not behind:
        return _Lag(0, 0.0)
    at = await _timed(stored_at(conn, tenant, done + 1))
    seconds = 0.0 if at is None else (dt.datetime.now(dt.UTC) - at).total_seconds()
    return _Lag(behind, max(seconds, 0.0))


async def _timed(what: Awaitable[T]) -> T:
    return await asyncio.wait_for(what, TIMEOUT_S)


def _merge(checks: Sequence[Check]) -> list[Check]:
    """One check per name: failed if any failed (their details joined), else passed."""
    by_name: dict[str, list[Check]] = {}
    for c in checks:
        by_name.setdefault(c.name, []).append(c)
    out = []
    for name, group in by_name.items():
        failed = [c.detail for c in group if not c.ok]
        out.append(Check(name, not failed, "; ".join(d for d in failed if d)))
    return out


def _one_line(exc: BaseException) -> str:
    text: Any = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
