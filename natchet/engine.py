"""The engine: per tenant, a dispatcher and a projector, each restarted if it fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import nats.errors
import psycopg
from nats.aio.client import Client as NATS

from dispatcher import Dispatcher
from eventstore import StreamLimits, connect, ensure_tenant_stream
from natchet.config import EngineSettings
from natchet.tenancy.service import TenancyService
from projector import Projector, migrate
from schemas.tenancy import TenantCreated

log = logging.getLogger(__name__)

RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
HEALTHY_S = 30.0


class Engine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.nc: NATS | None = None
        self.dispatchers: dict[str, Dispatcher] = {}
        self.projectors: dict[str, Projector] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.tenancy: TenancyService | None = None

    async def start(self) -> None:
        self.nc = nc = await connect(self.settings.nats_options("natchet-engine"))
        # Migrate before anything is projected, so readers never see a missing table.
        async with await psycopg.AsyncConnection.connect(self.settings.database_url) as conn:
            await migrate(conn)
        for tenant in self.settings.tenants:
            await self.start_tenant(tenant)
        auth = self.settings.nats_auth
        if auth is not None or self.settings.discover_tenants:
            # Tenants and tokens live in the system stream: serve every tenant it names, and
            # answer the server's auth callout from it (docs/tenancy.md).
            on_tenant = self._on_tenant if self.settings.discover_tenants else None
            self.tenancy = TenancyService(nc, self.settings.nats_url, auth, on_tenant)
            await self.tenancy.start()
        await asyncio.gather(*(d.ready.wait() for d in self.dispatchers.values()))
        self.ready.set()
        log.info("engine up: tenants %s", ", ".join(self.dispatchers))

    async def _on_tenant(self, created: TenantCreated) -> None:
        await self.start_tenant(created.tenant, StreamLimits(max_bytes=created.max_bytes))

    async def start_tenant(self, tenant: str, limits: StreamLimits | None = None) -> None:
        """Start a dispatcher and a projector for ``tenant`` (once), creating its stream."""
        if tenant in self.dispatchers or self._stop.is_set():
            return
        assert self.nc is not None
        await ensure_tenant_stream(self.nc.jetstream(), tenant, limits or StreamLimits())
        dispatcher = Dispatcher(self.nc, tenant)
        projector = Projector(self.nc, self.settings.database_url, tenant)
        self.dispatchers[tenant] = dispatcher
        self.projectors[tenant] = projector
        for what, run in (
            (f"dispatcher {tenant}", dispatcher.run),
            (f"projector {tenant}", projector.run),
        ):
            self._tasks.append(asyncio.create_task(self._supervise(what, run)))
        if self.ready.is_set():
            log.info("engine: now serving tenant %s", tenant)

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a component; when it fails, say so and start it again, with backoff."""
        delay = RESTART_MIN_S
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the supervisor's job is to outlive any one failure
                if loop.time() - started > HEALTHY_S:
                    delay = RESTART_MIN_S  # it ran fine for a while: this is a new failure
                log.exception("%s failed; restarting in %.1fs", what, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()

    async def shutdown(self) -> None:
        self._stop.set()
        if self.tenancy is not None:
            await self.tenancy.shutdown()
        for d in self.dispatchers.values():
            await d.shutdown()
        for p in self.projectors.values():
            await p.shutdown()
        _done, pending = await asyncio.wait(self._tasks, timeout=10) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.drain()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
