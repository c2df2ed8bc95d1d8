"""Setting a tenant up on the server: its accounts, its streams, the engine's way in.

With a :class:`~natchet.tenancy.serverconf.NatsAuth` (operator mode), a tenant gets two
accounts (``natchet/tenancy/accounts.py``), pushed to the server's resolver, and the engine
reaches the tenant's log through a user of the log account: never by sharing an account
with the tenant. Without one (a plain ``nats-server -js``, tests), every tenant's streams
live in the one account the engine is connected to, and nothing isolates tenants.
"""

from __future__ import annotations

import asyncio
import logging

from eventstore import (
    AppendRefusedError,
    Connection,
    StreamLimits,
    close,
    connect,
    ensure_tenant_stream,
)
from natchet.tenancy.accounts import TenantLimits
from natchet.tenancy.issuer import push_account, tenant_account_jwts
from natchet.tenancy.serverconf import NatsAuth
from schemas.tenancy import TenantCreated

log = logging.getLogger(__name__)


def limits_of(created: TenantCreated) -> TenantLimits:
    return TenantLimits(
        max_bytes=created.max_bytes,
        max_connections=created.max_connections,
        max_consumers=created.max_consumers,
    )


# What a node says of an account pushed to another node a moment before: the connection's
# node, or the JetStream meta leader asked in turn ("account not found": a fresh-clone CI).
NOT_YET_KNOWN = ("JetStream not enabled for account", "account not found")
KNOWN_WITHIN_S = 10.0


async def _streams_once_known(conn: Connection, tenant: str, limits: StreamLimits) -> None:
    """``ensure_tenant_stream``, again while the server says the account has no JetStream:
    on a NATS cluster, an account pushed to one node reaches the node this connection is on
    a moment later (seen with `natchet dev --cluster 3 --tls`)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + KNOWN_WITHIN_S
    while True:
        try:
            await ensure_tenant_stream(conn, tenant, limits)
            return
        except AppendRefusedError as exc:
            if not any(said in str(exc) for said in NOT_YET_KNOWN) or loop.time() > end:
                raise
            log.info("tenant %s: its account is not known on every node yet; waiting", tenant)
        await asyncio.sleep(0.2)


class Provisioner:
    """Provisions tenants and keeps the engine's connection into each tenant's log."""

    def __init__(
        self, url: str, nc: Connection, auth: NatsAuth | None, *, replicas: int = 1
    ) -> None:
        self.url = url
        self.replicas = replicas  # of every stream of every tenant (docs/scaling.md)
        self.nc = nc  # the engine's own connection (engine account, or the only account)
        self.auth = auth
        self.system: Connection | None = None
        self.logs: dict[str, Connection] = {}
        self.failed: dict[str, str] = {}  # tenant -> why it could not be set up
        self._ready: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()

    def ready(self, tenant: str) -> asyncio.Event:
        """Set once ``tenant``'s accounts and streams exist."""
        return self._ready.setdefault(tenant, asyncio.Event())

    async def provision(self, created: TenantCreated) -> Connection:
        """Push the tenant's accounts and create (or check) its streams; return the
        engine's connection to its log. Idempotent."""
        async with self._lock:
            try:
                conn = await self._provision(created)
            except Exception as exc:  # remembered for the callout's answer, then raised
                self.failed[created.tenant] = str(exc) or type(exc).__name__
                raise
            self.failed.pop(created.tenant, None)
            self.ready(created.tenant).set()
            return conn

    async def _provision(self, created: TenantCreated) -> Connection:
        tenant = created.tenant
        conn = self.nc
        if self.auth is not None:
            if self.system is None:
                self.system = await connect(
                    self.auth.options(self.url, "natchet-provisioner", "system")
                )
            for account in tenant_account_jwts(self.auth, tenant, limits_of(created)):
                await push_account(self.system, account)
            conn = self.logs.get(tenant) or await connect(
                self.auth.options(self.url, f"natchet-engine:{tenant}", f"log:{tenant}")
            )
            self.logs[tenant] = conn
        limits = StreamLimits(max_bytes=created.max_bytes, replicas=self.replicas)
        await _streams_once_known(conn, tenant, limits)
        return conn

    async def close(self) -> None:
        for conn in [*self.logs.values(), *([self.system] if self.system else [])]:
            await close(conn)
        self.logs.clear()
        self.system = None
