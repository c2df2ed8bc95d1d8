"""The engine: per tenant, a dispatcher and a projector, each restarted if it fails; or one
of the two (``EngineSettings.role``), when the other runs in another process. Its metrics
(``natchet.metrics``) are always kept; with ``settings.metrics_port`` it serves them, with
``/live`` and ``/ready``, on that port (``natchet.health``)."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

import psycopg

from dispatcher import Dispatcher
from dispatcher.gate import WorkerGate
from eventstore import Append, Connection, NatchetError, append, close, connect
from eventstore.sourcing import SourcingNudge
from natchet.config import EngineSettings
from natchet.health import HealthServer
from natchet.metrics import EngineMetrics
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


class Engine:
    """``watch_projector``: whether ``/ready`` and the lag metrics answer for the projector
    (default: when this process projects; ``natchet engine`` also when its child does)."""

    def __init__(self, settings: EngineSettings, *, watch_projector: bool | None = None) -> None:
        self.settings = settings
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
        self.dispatchers: dict[str, Dispatcher] = {}
        self.projectors: dict[str, Projector] = {}
        self.connections: dict[str, Connection] = {}  # tenant -> the connection to its log
        self.gates: dict[str, WorkerGate] = {}
        self.nudges: dict[str, SourcingNudge] = {}  # replicated streams only (docs/scaling.md)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.tenancy: TenancyService | None = None

    @property
    def database_url(self) -> str:
        return self.settings.database_url

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
        await asyncio.gather(*(d.ready.wait() for d in self.dispatchers.values()))
        self.ready.set()
        served = sorted({*self.dispatchers, *self.projectors})
        log.info("engine up (%s): tenants %s", self.settings.role, ", ".join(served))

    async def start_tenant(self, created: TenantCreated) -> None:
        """Set ``created.tenant`` up on the server (accounts, streams, with its current
        limits), then start its dispatcher and projector, once."""
        tenant = created.tenant
        if self._stop.is_set():
            return
        assert self.provisioner is not None
        conn = await self.provisioner.provision(created)
        self.connections[tenant] = conn
        if tenant in self.dispatchers or tenant in self.projectors:
            return  # already served: the limits are applied
        parts: list[tuple[str, Dispatcher | Projector | WorkerGate | SourcingNudge]] = []
        if self.settings.dispatches:
            dispatcher = Dispatcher(conn, tenant, on_log_full=self._log_full, observer=self.metrics)
            self.dispatchers[tenant] = dispatcher
            parts.append((f"dispatcher {tenant}", dispatcher))
            # Refuses workers speaking a wire protocol this engine cannot serve.
            # ... and tells the dispatcher who is alive (placement, issue 15).
            gate = WorkerGate(
                conn, tenant, engine_version=natchet_version(), on_beat=dispatcher.heard
            )
            self.gates[tenant] = gate
            parts.append((f"worker gate {tenant}", gate))
            if self.settings.stream_replicas > 1:
                nudge = SourcingNudge(conn, tenant)
                self.nudges[tenant] = nudge
                parts.append((f"sourcing nudge {tenant}", nudge))
        if self.settings.projects:
            projector = Projector(conn, self.settings.database_url, tenant)
            self.projectors[tenant] = projector
            parts.append((f"projector {tenant}", projector))
        for what, service in parts:
            self._tasks.append(asyncio.create_task(supervise(what, service.run, self._stop)))
        if self.ready.is_set():
            log.info("engine: now serving tenant %s", tenant)

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
        # Each kind at once across tenants: one after another, the tests' engine serving the
        # ~60 tenants of tests/tenancy took 22 s to stop; at once, under 4 s.
        await asyncio.gather(*(d.shutdown() for d in self.dispatchers.values()))
        await asyncio.gather(*(p.shutdown() for p in self.projectors.values()))
        await asyncio.gather(*(g.shutdown() for g in self.gates.values()))
        await asyncio.gather(*(n.shutdown() for n in self.nudges.values()))
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
