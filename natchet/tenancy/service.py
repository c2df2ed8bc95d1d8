"""What the engine runs for tenancy: the system stream fold and, with auth, the callout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from eventstore import Connection, Service, close, connect
from natchet.supervise import supervise
from natchet.tenancy.callout import CalloutService, OnDecision
from natchet.tenancy.provision import Provisioner
from natchet.tenancy.view import TenancyView
from schemas.tenancy import SystemMessage, TenantCreated, TenantLimitsChanged

log = logging.getLogger(__name__)

OnTenant = Callable[[TenantCreated], Awaitable[None]]


class TenancyService(Service):
    """Follows ``natchet-system`` on the engine's connection ``nc`` (supervised: a failure
    restarts the fold); calls ``on_tenant`` for every tenant (existing ones at start, new
    ones as they are created, and again when their limits change); with auth, answers the
    server's auth callout and kicks revoked tokens' connections (unless ``callout`` is
    false: an engine process that only projects). ``ready`` is set once the records that
    existed at start are folded."""

    name = "tenancy"

    def __init__(
        self,
        nc: Connection,
        provisioner: Provisioner,
        on_tenant: OnTenant | None = None,
        *,
        callout: bool = True,
        on_decision: OnDecision | None = None,
    ) -> None:
        super().__init__()
        self.on_decision = on_decision
        self.nc = nc
        self.answers_callout = callout
        self.provisioner = provisioner
        self.view = TenancyView(nc, replicas=provisioner.replicas)
        self.callout: CalloutService | None = None
        self._on_tenant = on_tenant
        self.view.listeners.append(self._on_system)

    @property
    def ready(self) -> asyncio.Event:
        return self.view.ready

    async def _serve(self) -> None:
        auth, url = self.provisioner.auth, self.provisioner.url
        conns: list[Connection] = []
        try:
            parts = [supervise("tenancy view", self.view.run, self.stopping)]
            if auth is not None and self.answers_callout:
                callout_nc = await connect(auth.options(url, "natchet-callout", "callout"))
                conns.append(callout_nc)
                system_nc = await connect(auth.options(url, "natchet-kick", "system"))
                conns.append(system_nc)
                self.callout = CalloutService(
                    callout_nc, self.view, auth, self.provisioner, system_nc, self.on_decision
                )
                parts.append(supervise("auth callout", self.callout.run, self.stopping))
            await self.until_stopping(asyncio.gather(*parts))
        finally:
            await self.view.shutdown()
            if self.callout is not None:
                await self.callout.shutdown()
            for conn in conns:
                await close(conn, drain=False)

    async def _on_system(self, message: SystemMessage) -> None:
        """A new tenant, or new limits for one: (re)apply what the fold now says of it."""
        if isinstance(message, TenantCreated | TenantLimitsChanged) and self._on_tenant:
            current = self.view.state.tenants.get(message.tenant)
            if current is not None:
                await self._on_tenant(current)
