"""Every long-running component has the same lifecycle, on real servers: ``async with``
runs it, ``shutdown()`` returns once it has stopped, and calling it again does nothing."""

from __future__ import annotations

import pytest

from dispatcher import Dispatcher
from eventstore import Connection, Service, ensure_tenant_stream
from natchet.config import EngineSettings
from natchet.engine import Engine
from natchet.tenancy.view import TenancyView
from projector import Projector
from tests.conftest import eventually


async def stops_cleanly(service: Service) -> None:
    async with service:
        await eventually(lambda: service.running)
    assert not service.running
    await service.shutdown()
    assert not service.running


async def test_dispatcher(nc: Connection, tenant_name: str) -> None:
    await ensure_tenant_stream(nc, tenant_name)
    dispatcher = Dispatcher(nc, tenant_name)
    async with dispatcher:
        await eventually(dispatcher.ready.is_set)
    assert not dispatcher.running
    await dispatcher.shutdown()


async def test_projector(nc: Connection, dsn: str, tenant_name: str) -> None:
    await ensure_tenant_stream(nc, tenant_name)
    await stops_cleanly(Projector(nc, dsn, tenant_name))


async def test_tenancy_view(nc: Connection) -> None:
    view = TenancyView(nc)
    async with view:
        await eventually(view.ready.is_set)
    assert not view.running


@pytest.mark.timeout(60)
async def test_engine(nats_server: object, dsn: str, tenant_name: str) -> None:
    settings = EngineSettings(nats_server.url, dsn, (tenant_name,))  # type: ignore[attr-defined]
    engine = Engine(settings)
    async with engine:
        assert engine.ready.is_set()
        parts: list[Service] = [*engine.dispatchers.values(), *engine.projectors.values()]
        if engine.tenancy is not None:
            parts.append(engine.tenancy)
        await eventually(lambda: all(p.running for p in parts))
    assert not any(p.running for p in parts)
    await engine.shutdown()
