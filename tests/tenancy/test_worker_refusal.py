"""A refusal reaches a worker through the broker's account boundary: with tenants in their
own accounts, the engine's answer on ``workers.<id>.refused`` is exported to the tenant."""

from __future__ import annotations

import asyncio

import pytest

import worker.version
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from schemas.protocol import PROTOCOL
from tests.tenancy.conftest import echo_workflow, hatchet_with_token, new_tenant
from worker import WorkerFatalError
from worker.vitals import Exit

pytestmark = pytest.mark.timeout(120)


async def test_a_tenant_worker_speaking_an_unknown_protocol_is_refused_with_the_reason(
    tenancy_engine: Engine, auth_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tenant, token = await new_tenant(tenancy_engine, auth_server, "refuse")
    monkeypatch.setattr(worker.version, "PROTOCOL", PROTOCOL + 7)
    hatchet = hatchet_with_token(token)
    w = hatchet.worker("future", max_runs=1, grace_seconds=1)
    w.register_workflow(echo_workflow(hatchet))
    with pytest.raises(WorkerFatalError) as info:
        await asyncio.wait_for(w.run(), 60)
    assert info.value.code == Exit.REFUSED
    assert f"wire protocol {PROTOCOL + 7}" in info.value.reason
    assert f"accepts protocol {PROTOCOL}" in info.value.reason
    hatchet.close()
