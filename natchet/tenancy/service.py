"""What the engine runs for tenancy: the system stream fold and, with auth, the callout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NATS

from eventstore import connect
from natchet.tenancy.callout import CalloutService
from natchet.tenancy.serverconf import NatsAuth
from natchet.tenancy.view import TenancyView
from schemas.tenancy import SystemMessage, TenantCreated

log = logging.getLogger(__name__)

OnTenant = Callable[[TenantCreated], Awaitable[None]]


class TenancyService:
    """Follows ``natchet-system`` on the engine's connection ``nc``; calls ``on_tenant`` for
    every tenant (existing ones at start, new ones as they are created); with ``auth``,
    answers the server's auth callout and kicks revoked tokens' connections."""

    def __init__(
        self, nc: NATS, url: str, auth: NatsAuth | None, on_tenant: OnTenant | None = None
    ) -> None:
        self.nc = nc
        self.url = url
        self.auth = auth
        self.view = TenancyView(nc)
        self.callout: CalloutService | None = None
        self._on_tenant = on_tenant
        self._conns: list[NATS] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.view.listeners.append(self._on_system)

    async def start(self) -> None:
        if self.auth is not None:
            callout_nc = await connect(self.auth.options(self.url, "natchet-callout", "callout"))
            system_nc = await connect(self.auth.options(self.url, "natchet-system", "system"))
            self._conns += [callout_nc, system_nc]
            self.callout = CalloutService(callout_nc, self.view, self.auth.issuer, system_nc)
            self._tasks.append(asyncio.create_task(self.callout.run()))
        self._tasks.append(asyncio.create_task(self.view.run()))
        ready = asyncio.create_task(self.view.ready.wait())
        done, _ = await asyncio.wait([ready, self._tasks[-1]], return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            self._tasks[-1].result()  # raises what stopped the fold

    async def _on_system(self, message: SystemMessage) -> None:
        if isinstance(message, TenantCreated) and self._on_tenant is not None:
            try:
                await self._on_tenant(message)
            except nats.errors.Error as exc:
                log.error("could not start tenant %s: %s", message.tenant, exc)

    async def shutdown(self) -> None:
        if self.callout is not None:
            await self.callout.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for conn in self._conns:
            with contextlib.suppress(nats.errors.Error):
                await conn.close()
        self._conns.clear()
