"""What the engine runs for tenancy: the system stream fold and, with auth, the callout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NATS

from eventstore import connect
from natchet.supervise import supervise
from natchet.tenancy.callout import CalloutService
from natchet.tenancy.provision import Provisioner
from natchet.tenancy.view import TenancyView
from schemas.tenancy import SystemMessage, TenantCreated, TenantLimitsChanged

log = logging.getLogger(__name__)

OnTenant = Callable[[TenantCreated], Awaitable[None]]


class TenancyService:
    """Follows ``natchet-system`` on the engine's connection ``nc`` (supervised: a failure
    restarts the fold); calls ``on_tenant`` for every tenant (existing ones at start, new
    ones as they are created); with auth, answers the server's auth callout and kicks
    revoked tokens' connections."""

    def __init__(
        self, nc: NATS, provisioner: Provisioner, on_tenant: OnTenant | None = None
    ) -> None:
        self.nc = nc
        self.provisioner = provisioner
        self.view = TenancyView(nc)
        self.callout: CalloutService | None = None
        self._on_tenant = on_tenant
        self._conns: list[NATS] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.view.listeners.append(self._on_system)

    async def start(self) -> None:
        auth, url = self.provisioner.auth, self.provisioner.url
        if auth is not None:
            callout_nc = await connect(auth.options(url, "natchet-callout", "callout"))
            system_nc = await connect(auth.options(url, "natchet-kick", "system"))
            self._conns += [callout_nc, system_nc]
            self.callout = CalloutService(callout_nc, self.view, auth, self.provisioner, system_nc)
            self._tasks.append(asyncio.create_task(self.callout.run()))
        fold = asyncio.create_task(supervise("tenancy view", self.view.run, self._stop))
        self._tasks.append(fold)
        ready = asyncio.create_task(self.view.ready.wait())
        done, _ = await asyncio.wait([ready, fold], return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            fold.result()  # raises what stopped the fold

    async def _on_system(self, message: SystemMessage) -> None:
        """A new tenant, or new limits for one: (re)apply what the fold now says of it."""
        if isinstance(message, TenantCreated | TenantLimitsChanged) and self._on_tenant:
            current = self.view.state.tenants.get(message.tenant)
            if current is not None:
                await self._on_tenant(current)

    async def shutdown(self) -> None:
        self._stop.set()
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
