"""A nats-server that authenticates through the engine's auth callout, the engine that
serves it (discovering tenants from the system stream), and two fresh tenants per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
from bench.throwaway import database
from eventstore import NatsOptions, PermissionDeniedError
from eventstore.connection import request
from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine
from natchet.tenancy import admin
from natchet.tenancy.serverconf import AUTH_FILE, NatsAuth, write_server_files
from projector import list_runs
from schemas import StepResult
from schemas.tenancy import inbox_prefix
from tests.conftest import eventually, running
from tests.support import run_ends
from worker import ClientSettings, Context, Hatchet


@pytest.fixture(scope="package")
def auth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nats-auth")
    write_server_files(directory, NatsAuth.generate())
    return directory


@pytest.fixture(scope="package")
def auth_server(auth_dir: Path) -> Iterator[NatsServer]:
    with NatsServer(auth_dir / "store", config_file=auth_dir / "nats-server.conf") as server:
        yield server


@pytest.fixture(scope="package")
async def tenancy_dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    async with database(pg_server.url(), "tenancy") as url:
        yield url


# Package scope, not session: this engine serves every tenant the package's tests create
# (~95 by the end of tests/tenancy), one Postgres connection and ~0.4% of a core idle each.
# Kept for the rest of a test process's session, it held 95 of its Postgres's 200
# connections and lost all its leases at once when the session's event loop was held (it
# stops while synchronous code runs); in a full run that Postgres then refused every later
# test's connection ("too many clients already": 3 failed, 27 errors).
@pytest.fixture(scope="package")
async def tenancy_engine(
    auth_server: NatsServer, auth_dir: Path, tenancy_dsn: str
) -> AsyncIterator[Engine]:
    settings = EngineSettings(
        auth_server.url,
        tenancy_dsn,
        tenants=(),
        nats_auth_file=str(auth_dir / AUTH_FILE),
        discover_tenants=True,
    )
    async with Engine(settings) as engine:
        yield engine


@pytest.fixture
async def admin_nc(tenancy_engine: Engine) -> NATS:
    """The engine's own connection: its account holds the system records, nothing else."""
    assert tenancy_engine.nc is not None
    return tenancy_engine.nc


def log_nc(engine: Engine, tenant: str) -> NATS:
    """The engine's connection into ``tenant``'s log account."""
    assert engine.provisioner is not None
    return engine.provisioner.logs[tenant]


@pytest.fixture
async def tdb(tenancy_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(tenancy_dsn, autocommit=True) as conn:
        yield conn


async def new_tenant(engine: Engine, server: NatsServer, prefix: str) -> tuple[str, str]:
    """A fresh tenant, served by the engine; returns (name, admin token)."""
    assert engine.nc is not None
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    await admin.create_tenant(engine.nc, name)
    issued = await admin.create_token(engine.nc, name, server.url, name="test")

    async def served() -> bool:
        return name in engine.dispatchers and engine.dispatchers[name].ready.is_set()

    await eventually(served)
    return name, issued.token


def client_options(server: NatsServer, tenant: str, token: str | None) -> NatsOptions:
    return NatsOptions(
        server.url, name=f"test-{tenant}", token=token, inbox_prefix=inbox_prefix(tenant)
    )


@attrs.define
class Attacker:
    """A connection holding tenant A's valid token, and what the broker told it."""

    tenant: str
    token: str
    nc: NATS
    errors: list[Exception] = attrs.field(factory=list)

    def violations(self) -> list[str]:
        return [str(e) for e in self.errors if "permissions violation" in str(e).lower()]

    async def refused(self, *apis: str, body: bytes = b"{}") -> None:
        """Each request (a JetStream API subject, say) is refused by the broker."""
        for api in apis:
            with pytest.raises(PermissionDeniedError):
                await request(self.nc, api, body, timeout_s=3)


@attrs.frozen
class Victim:
    tenant: str
    token: str
    finished_run: str
    pending_run: str
    workflow: str = "Echo"


def echo_workflow(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Echo", on_events=["echo"])
    class Echo:
        @hatchet.step()
        def say(self, context: Context) -> dict[str, Any]:
            return {"said": context.workflow_input()}

    return Echo()


def forged_result(run_id: str) -> StepResult:
    """A result claiming step ``say`` of ``run_id`` succeeded, from a worker that never ran it."""
    return StepResult(
        run_id=run_id,
        step="say",
        attempt=1,
        delivery=1,
        worker_id="evil",
        ok=True,
        output={"said": "pwned"},
    )


def hatchet_with_token(token: str, namespace: str = "default", **env: str) -> Hatchet:
    return Hatchet(
        settings=ClientSettings.from_env(
            {"HATCHET_CLIENT_TOKEN": token, "HATCHET_CLIENT_NAMESPACE": namespace, **env}
        )
    )


@pytest.fixture
async def victim(
    tenancy_engine: Engine, auth_server: NatsServer, tdb: psycopg.AsyncConnection[Any]
) -> AsyncIterator[Victim]:
    """Tenant B: one run finished by its worker, one queued with its task waiting in B's
    queue-group consumer (the worker is gone)."""
    tenant, token = await new_tenant(tenancy_engine, auth_server, "b")
    hatchet = hatchet_with_token(token)
    worker = hatchet.worker("b-worker", max_runs=2)
    worker.register_workflow(echo_workflow(hatchet))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Echo", {"secret": "b's data"})
        await run_ends(tdb, ref.workflow_run_id)
    pending = await hatchet.admin.aio_run_workflow("Echo", {"n": 2})
    hatchet.close()

    async def queued() -> bool:
        runs = await list_runs(tdb, tenant=tenant)
        return any(r["id"] == pending.workflow_run_id for r in runs)

    await eventually(queued)
    yield Victim(tenant, token, ref.workflow_run_id, pending.workflow_run_id)


@pytest.fixture
async def attacker(tenancy_engine: Engine, auth_server: NatsServer) -> AsyncIterator[Attacker]:
    tenant, token = await new_tenant(tenancy_engine, auth_server, "a")
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await eventstore.connect(client_options(auth_server, tenant, token), on_error=on_error)
    yield Attacker(tenant, token, nc, errors)
    await nc.close()
