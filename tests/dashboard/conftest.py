"""The dashboard served by uvicorn on a free port against the secured test stack of
tests/tenancy (auth callout, one NATS account per tenant, real tokens), and clients signed
in to it with a tenant token or an operator credential."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from natchet.config import EngineSettings
from natchet.dashboard.app import Dashboard
from natchet.dashboard.backend import DashboardSettings
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.tenancy import admin
from natchet.tenancy.serverconf import AUTH_FILE
from tests.tenancy import conftest as tenancy

# The secured stack's fixtures of tests/tenancy: here, a server and an engine of this package's own.
auth_dir = tenancy.auth_dir
auth_server = tenancy.auth_server
tenancy_dsn = tenancy.tenancy_dsn
tenancy_engine = tenancy.tenancy_engine
admin_nc = tenancy.admin_nc
tdb = tenancy.tdb
victim = tenancy.victim
attacker = tenancy.attacker

Client = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture(scope="package")
async def dashboard_url(
    auth_server: NatsServer,
    auth_dir: Path,
    tenancy_dsn: str,
    tenancy_engine: Engine,
) -> AsyncIterator[str]:
    engine = EngineSettings(
        auth_server.url, tenancy_dsn, tenants=(), nats_auth_file=str(auth_dir / AUTH_FILE)
    )
    settings = DashboardSettings(engine, "test-secret", auth_server.url)
    dashboard = Dashboard(settings, "127.0.0.1", 0)
    await dashboard.start()
    try:
        yield dashboard.url
    finally:
        await dashboard.shutdown()


@pytest.fixture
async def operator(tenancy_engine: Engine) -> str:
    assert tenancy_engine.nc is not None
    _id, credential = await admin.create_operator(tenancy_engine.nc, name="test")
    return credential


@pytest.fixture
async def client(dashboard_url: str) -> AsyncIterator[Client]:
    """``await client(credential)``: an HTTP client signed in with it, sending its CSRF
    header on every request (a test that checks CSRF removes it)."""
    opened: list[httpx.AsyncClient] = []

    async def signed_in(credential: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(base_url=dashboard_url, timeout=30)
        opened.append(c)
        r = await c.post("/api/session", json={"token": credential})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    yield signed_in
    for c in opened:
        await c.aclose()
