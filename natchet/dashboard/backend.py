"""What the dashboard reaches: NATS (as the engine, for tenants and tokens; in each tenant's
log account, for its log and workers) and the Postgres read model. Connections are opened
once and kept; the read model is opened per request (a short query each)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import psycopg
import psycopg.errors

from eventstore import Connection, NatsOptions, close, connect
from natchet.config import EngineSettings
from natchet.tenancy.admin import load_state
from natchet.tenancy.state import TenancyState
from schemas.errors import NatchetError

CLIENT_NAME = "natchet-dashboard"


class UnavailableError(NatchetError):
    """A server the dashboard reads from cannot be reached (or is not natchet's)."""


@attrs.frozen
class DashboardSettings:
    """``engine``: where NATS and Postgres are (as ``natchet engine`` finds them);
    ``secret``: what signs session cookies; ``public_nats_url``: the address tokens name."""

    engine: EngineSettings
    secret: str = attrs.field(repr=False)
    public_nats_url: str


class Backend:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._engine: Connection | None = None
        self._logs: dict[str, Connection] = {}
        self._lock = asyncio.Lock()
        # tenant -> (when, its namespaces): the namespace selector's options, kept briefly.
        self.namespaces: dict[str, tuple[float, list[str]]] = {}

    def _log_options(self, tenant: str) -> NatsOptions:
        engine = self.settings.engine
        if engine.nats_auth_file:
            from natchet.tenancy.serverconf import NatsAuth

            auth = NatsAuth.load(Path(engine.nats_auth_file))
            return auth.options(engine.nats_url, CLIENT_NAME, f"log:{tenant}")
        return engine.nats_options(CLIENT_NAME)

    async def engine_nc(self) -> Connection:
        async with self._lock:
            if self._engine is None:
                self._engine = await connect(self.settings.engine.nats_options(CLIENT_NAME))
            return self._engine

    async def log_nc(self, tenant: str) -> Connection:
        """A connection to ``tenant``'s log (the engine's own when there are no accounts)."""
        if not self.settings.engine.nats_auth_file:
            return await self.engine_nc()
        async with self._lock:
            nc = self._logs.get(tenant)
            if nc is None:
                nc = self._logs[tenant] = await connect(self._log_options(tenant))
            return nc

    async def state(self) -> TenancyState:
        """Tenants, tokens and operators, folded from the system stream now."""
        return await load_state(await self.engine_nc())

    @asynccontextmanager
    async def db(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection to the read model; one that cannot be had is an
        :class:`UnavailableError` saying why (the app answers 503 with it)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.engine.database_url, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnavailableError(f"PostgreSQL: {reason}") from None
        async with conn:
            try:
                yield conn
            except psycopg.errors.UndefinedTable:
                raise UnavailableError(
                    "the database has no natchet tables: is it the engine's?"
                ) from None

    async def aclose(self) -> None:
        for nc in [*self._logs.values(), *([self._engine] if self._engine else [])]:
            await close(nc)
        self._logs.clear()
        self._engine = None
