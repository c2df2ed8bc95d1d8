"""The engine: per tenant, a dispatcher and a projector, each restarted if it fails; or one
of the two (``EngineSettings.role``), when the other runs in another process. Its metrics
(``natchet.metrics``) are always kept; with ``settings.metrics_port`` it serves them, with
``/live`` and ``/ready``, on that port (``natchet.health``).

With ``settings.leases`` (the default) several engines may serve the same tenants: a
tenant's dispatcher (with its worker gate and sourcing nudge) and its projector each run
only in the engine holding that unit's lease (``natchet.leases``), are started when the
lease is won, stopped gracefully when it is handed back, and cancelled at once when it is
lost (the fence).

A tenant's dispatch may be split into partitions (``settings.dispatch_partitions``, issue
16; the count every engine agreed on: ``natchet.partitions``): each partition is a unit
of its own, with its own dispatcher and worker gate (partitions may run in different
engines, and each must hear the workers), so one engine may run several dispatchers of a
tenant. Each also runs a sourcing nudge, which only partition 0's lets step down the task
queues' leader."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

import attrs
import psycopg

from dispatcher import Dispatcher
from dispatcher.gate import WorkerGate
from dispatcher.partition import WHOLE, Partition
from eventstore import Append, Connection, NatchetError, append, close, connect
from eventstore.sourcing import SourcingNudge
from natchet.config import EngineSettings
from natchet.health import HealthServer
from natchet.leases import Leases, LeaseTiming, Unit
from natchet.metrics import EngineMetrics
from natchet.partitions import PartitionCounts
from natchet.probe import Probe
from natchet.supervise import supervise
from natchet.tenancy.provision import Provisioner
from natchet.tenancy.service import TenancyService
from natchet.version import natchet_version
from projector import Projector, migrate
from schemas import encode
from schemas.tenancy import TenantCreated, TenantLogFull, full_subject

log = logging.getLogger(__name__)


async def _started(task: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Wait until ``ready``, or raise what stopped ``task`` first."""
    waiting = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        waiting.cancel()
        task.result()
        raise RuntimeError("the tenancy service stopped before it was ready")


Part = Dispatcher | Projector | WorkerGate | SourcingNudge


@attrs.define
class _Running:
    """One unit of work started in this engine: its services and their supervisors."""

    parts: list[tuple[str, Part]]
    stop: asyncio.Event = attrs.Factory(asyncio.Event)
    tasks: list[asyncio.Task[None]] = attrs.Factory(list)


class Engine:
    """``watch_projector``: whether ``/ready`` and the lag metrics answer for the projector
    (default: when this process projects; ``natchet engine`` also when its child does).
    ``lease_timing``: the leases' timing (``natchet.leases.LeaseTiming``), when leases are on.
    """

    def __init__(
        self,
        settings: EngineSettings,
        *,
        watch_projector: bool | None = None,
        lease_timing: LeaseTiming | None = None,
    ) -> None:
        self.settings = settings
        self.lease_timing = lease_timing
        self.metrics = EngineMetrics()
        self.probe = Probe(
            self,
            dispatcher=settings.dispatches,
            projector=settings.projects if watch_projector is None else watch_projector,
            max_lag_s=settings.ready_max_lag_s,
        )
        self.health: HealthServer | None = None
        self.nc: Connection | None = None
        self.provisioner: Provisioner | None = None
        # Every dispatcher running here: a tenant's whole dispatch, or partitions of it.
        self.dispatch: dict[Unit, Dispatcher] = {}
        self.projectors: dict[str, Projector] = {}
        self.connections: dict[str, Connection] = {}  # tenant -> the connection to its log
        self.gates: dict[Unit, WorkerGate] = {}  # one per dispatch unit, beside its dispatcher
        self.nudges: dict[Unit, SourcingNudge] = {}  # replicated streams only (docs/scaling.md)
        self.partitions: dict[str, int] = {}  # tenant -> how many partitions its dispatch has
        self.partition_counts: PartitionCounts | None = None  # with leases: agreed counts
        self.leases: Leases | None = None
        self._tenants: set[str] = set()
        self._units: dict[Unit, _Running] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.tenancy: TenancyService | None = None

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    @property
    def dispatchers(self) -> dict[str, Dispatcher]:
        """Each tenant's dispatcher here: its whole dispatch, or the lowest partition of it
        this engine runs (every partition folds the whole log: any of them knows the
        tenant's workflows and workers; each decides for the runs it owns)."""
        out: dict[str, Dispatcher] = {}
        for unit, dispatcher in sorted(self.dispatch.items()):
            out.setdefault(unit.tenant, dispatcher)
        return out

    async def start(self) -> None:
        if self.settings.metrics_port is not None:
            # First, so /live answers and /ready says "still starting" while the rest starts.
            health = HealthServer(
                self.metrics, self.probe, self.settings.metrics_host, self.settings.metrics_port
            )
            await health.open()  # a port that cannot be had: one line, nothing started
            self.health = health
            health.start()
        self.nc = nc = await connect(self.settings.nats_options("natchet-engine"))
        auth = self.settings.nats_auth
        self.provisioner = Provisioner(
            self.settings.nats_url, nc, auth, replicas=self.settings.stream_replicas
        )
        # Migrate before anything is projected, so readers never see a missing table.
        async with await psycopg.AsyncConnection.connect(self.settings.database_url) as conn:
            await migrate(conn)
        if self.settings.leases:
            self.leases = Leases(
                nc,
                self.components,
                gained=self._gained,
                fenced=self._fenced,
                released=self._released,
                timing=self.lease_timing,
                replicas=self.settings.stream_replicas,
            )
            leases = self.leases
            self.metrics.leases_held = lambda: [
                (u.tenant, u.component, "" if u.part is None else str(u.part))
                for u in leases.owned()
            ]
            if self.settings.dispatches:
                self.partition_counts = PartitionCounts(nc, replicas=self.settings.stream_replicas)
            keeping = supervise("leases", self.leases.run, self._stop)
            self._tasks.append(asyncio.create_task(keeping))
        for tenant in self.settings.tenants:
            await self.start_tenant(TenantCreated(tenant=tenant))
        if auth is not None or self.settings.discover_tenants:
            # Tenants and tokens live in the system stream: serve every tenant it names, and
            # answer the server's auth callout from it (docs/tenancy.md).
            on_tenant = self.start_tenant if self.settings.discover_tenants else None
            # One process answers the callout: the one that dispatches.
            self.tenancy = TenancyService(
                nc,
                self.provisioner,
                on_tenant,
                callout=self.settings.dispatches,
                on_decision=self.metrics.callout_decided,
            )
            await _started(self.tenancy.start(), self.tenancy.ready)
        if self.leases is not None:
            await self.leases.settled()  # a round of claims over every tenant known now
        await asyncio.gather(*(d.ready.wait() for d in list(self.dispatch.values())))
        self.ready.set()
        if self.leases is None:
            served = sorted({*self.dispatchers, *self.projectors})
            log.info("engine up (%s): tenants %s", self.settings.role, ", ".join(served))
        else:
            log.info(
                "engine up (%s, holder %s): tenants %s; holds %s",
                self.settings.role,
                self.leases.holder,
                ", ".join(sorted(self._tenants)),
                ", ".join(u.key for u in self.leases.owned()) or "nothing yet",
            )

    @property
    def components(self) -> tuple[str, ...]:
        """The units this engine may run per tenant (``natchet.leases.COMPONENTS``)."""
        settings = self.settings
        return tuple(
            c for c, on in (("dispatch", settings.dispatches), ("project", settings.projects)) if on
        )

    async def start_tenant(self, created: TenantCreated) -> None:
        """Set ``created.tenant`` up on the server (accounts, streams, with its current
        limits), then start its dispatcher and projector, once."""
        tenant = created.tenant
        if self._stop.is_set():
            return
        assert self.provisioner is not None
        conn = await self.provisioner.provision(created)
        self.connections[tenant] = conn
        if tenant in self._tenants:
            return  # already served: the limits are applied
        self._tenants.add(tenant)
        try:
            partitions = await self._partitions_of(tenant)
        except BaseException:
            self._tenants.discard(tenant)  # the next call (a limits change, a restart) tries again
            raise
        self.partitions[tenant] = partitions
        if self.leases is not None:
            self.leases.want(tenant, partitions)  # started if and when this engine wins a lease
        else:
            for component in self.components:
                parts = partitions if component == "dispatch" else 1
                for unit in Unit.units(tenant, component, parts):
                    self._start_unit(unit)
        if self.ready.is_set():
            log.info("engine: now serving tenant %s", tenant)

    async def _partitions_of(self, tenant: str) -> int:
        """How many partitions ``tenant``'s dispatch has: this engine's setting, or with
        leases the count the engines agreed on (the first one's: ``natchet.partitions``)."""
        setting = self.settings.dispatch_partitions
        if self.partition_counts is None:  # leases off (this engine runs them all), or no dispatch
            return setting if self.settings.dispatches else 1
        return await self.partition_counts.agree(tenant, setting)

    def _partition(self, unit: Unit) -> Partition:
        if unit.part is None:
            return WHOLE
        return Partition(unit.part, self.partitions[unit.tenant])

    def _start_unit(self, unit: Unit) -> None:
        """Start ``unit``'s services, each under a supervisor."""
        tenant, conn = unit.tenant, self.connections[unit.tenant]
        parts: list[tuple[str, Part]] = []
        if unit.component == "dispatch":
            partition = self._partition(unit)
            name = tenant if partition.whole else f"{tenant} partition {partition.index}"
            # A full log is recorded once per tenant, by partition 0's dispatcher (every
            # partition appends to the same log: each would record it).
            full = self._log_full if partition.coordinator else None
            dispatcher = Dispatcher(
                conn, tenant, partition=partition, on_log_full=full, observer=self.metrics
            )
            self.dispatch[unit] = dispatcher
            parts.append((f"dispatcher {name}", dispatcher))
            # Refuses workers speaking a wire protocol this engine cannot serve.
            # ... and tells the dispatcher who is alive (placement, issue 15). Each
            # partition hears the workers through a gate of its own: another partition
            # may run in another engine.
            gate = WorkerGate(
                conn, tenant, engine_version=natchet_version(), on_beat=dispatcher.heard
            )
            self.gates[unit] = gate
            parts.append((f"worker gate {name}", gate))
            if self.settings.stream_replicas > 1:
                # Every partition's appends must hear of a new leader of the log; partition
                # 0 alone steps the task queues down (one step-down an election).
                nudge = SourcingNudge(conn, tenant, step_down=partition.coordinator)
                self.nudges[unit] = nudge
                parts.append((f"sourcing nudge {name}", nudge))
        else:
            projector = Projector(conn, self.settings.database_url, tenant)
            self.projectors[tenant] = projector
            parts.append((f"projector {tenant}", projector))
        running = _Running(parts)
        for what, service in parts:
            running.tasks.append(asyncio.create_task(supervise(what, service.run, running.stop)))
        self._units[unit] = running

    def _forget(self, unit: Unit, running: _Running) -> None:
        if self._units.get(unit) is running:
            del self._units[unit]
        ours = [p for _, p in running.parts]
        for registry in (self.dispatch, self.gates, self.nudges):
            if any(registry.get(unit) is p for p in ours):
                del registry[unit]
        if any(self.projectors.get(unit.tenant) is p for p in ours):
            del self.projectors[unit.tenant]

    async def _gained(self, unit: Unit) -> None:
        self._start_unit(unit)

    def _fenced(self, unit: Unit) -> None:
        """The lease is lost: stop ``unit`` now (cancelled: no append after this)."""
        running = self._units.get(unit)
        if running is None:
            return
        running.stop.set()
        for task in running.tasks:
            task.cancel()
        self._forget(unit, running)

    async def _released(self, unit: Unit) -> None:
        """Stop ``unit`` cleanly (what it holds stored and acked), then return."""
        running = self._units.get(unit)
        if running is None:
            return
        running.stop.set()
        for _, part in running.parts:  # the dispatcher first: it stops deciding
            await part.shutdown()
        _done, pending = await asyncio.wait(running.tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*running.tasks, return_exceptions=True)
        self._forget(unit, running)

    async def _log_full(self, tenant: str, reason: str) -> None:
        """Record in the engine's own log that ``tenant``'s log is full (shown by
        ``natchet tenant list``); the tenant's log itself has no room to say so."""
        assert self.nc is not None
        max_bytes = -1
        if self.tenancy is not None and tenant in self.tenancy.view.state.tenants:
            max_bytes = self.tenancy.view.state.tenants[tenant].max_bytes
        record = TenantLogFull(tenant=tenant, max_bytes=max_bytes, reason=reason)
        try:
            await append(self.nc, Append(full_subject(tenant), encode(record)))
        except NatchetError as exc:
            log.error("could not record that tenant %s's log is full: %s", tenant, exc)

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()

    async def shutdown(self) -> None:
        self._stop.set()
        if self.health is not None:
            await self.health.shutdown()
        if self.tenancy is not None:
            await self.tenancy.shutdown()
        if self.leases is not None:
            await self.leases.shutdown()  # each unit stopped, then its lease handed back
        # Units at once across tenants: one after another, the tests' engine serving the
        # ~60 tenants of tests/tenancy took 22 s to stop; at once, under 4 s.
        await asyncio.gather(*(self._released(u) for u in list(self._units)))
        _done, pending = await asyncio.wait(self._tasks, timeout=10) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.provisioner is not None:
            await self.provisioner.close()
        if self.nc is not None:
            await close(self.nc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
