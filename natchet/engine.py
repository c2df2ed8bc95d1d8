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
from eventstore import connect, ensure_tenant_stream
from natchet.config import EngineSettings
from projector import Projector, migrate

log = logging.getLogger(__name__)

RESTART_MAX_S = 10.0


class Engine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.nc: NATS | None = None
        self.dispatchers: dict[str, Dispatcher] = {}
        self.projectors: dict[str, Projector] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self.nc = nc = await connect(self.settings.nats_options("natchet-engine"))
        # Migrate before anything is projected, so readers never see a missing table.
        async with await psycopg.AsyncConnection.connect(self.settings.database_url) as conn:
            await migrate(conn)
        for tenant in self.settings.tenants:
            await ensure_tenant_stream(nc.jetstream(), tenant)
            dispatcher = Dispatcher(nc, tenant)
            projector = Projector(nc, self.settings.database_url, tenant)
            self.dispatchers[tenant] = dispatcher
            self.projectors[tenant] = projector
            for what, run in (
                (f"dispatcher {tenant}", dispatcher.run),
                (f"projector {tenant}", projector.run),
            ):
                self._tasks.append(asyncio.create_task(self._supervise(what, run)))
        await asyncio.gather(*(d.ready.wait() for d in self.dispatchers.values()))
        self.ready.set()
        log.info("engine up: tenants %s", ", ".join(self.settings.tenants))

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a component; when it fails, say so and start it again, with backoff."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the supervisor's job is to outlive any one failure
                log.exception("%s failed; restarting in %.1fs", what, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()

    async def shutdown(self) -> None:
        self._stop.set()
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
