"""Directed tasks (issue 15) across tenants: an attacker holding tenant A's valid token
cannot pull from tenant B's worker's directed consumer, create a consumer on B's directed
subjects, or offer B's worker a task; nor can it create a consumer on its own directed
subjects (tenants create no consumers: the engine does)."""

from __future__ import annotations

import orjson
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from eventstore import PermissionDeniedError, directed_consumer_name, ensure_directed_consumer
from eventstore.connection import request
from natchet.engine import Engine
from schemas import Scope
from schemas.subjects import tasks_stream_name
from tests.tenancy.conftest import Attacker, Victim, log_nc

pytestmark = pytest.mark.timeout(120)

WORKER = "victimworker1"


async def test_another_tenants_directed_consumer_is_out_of_reach(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine
) -> None:
    b = Scope(victim.tenant)
    engine_nc = log_nc(tenancy_engine, victim.tenant)
    name = await ensure_directed_consumer(engine_nc, b, WORKER)
    assert name == directed_consumer_name(b, WORKER)
    stream = tasks_stream_name(victim.tenant)
    with pytest.raises(PermissionDeniedError):
        await request(
            attacker.nc,
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
            b'{"batch": 1, "expires": 1000000000}',
            timeout_s=3,
        )
    stolen = ConsumerConfig(
        durable_name="stolen",
        ack_policy=AckPolicy.EXPLICIT,
        filter_subject=b.directed_filter(WORKER),
    )
    for subject in (
        f"$JS.API.CONSUMER.CREATE.{stream}.stolen",
        f"$JS.API.CONSUMER.CREATE.{stream}.stolen.{b.directed_filter(WORKER)}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.stolen",
    ):
        body = orjson.dumps({"stream_name": stream, "config": stolen.as_dict()})
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)
    # Offering B's worker a task: the subject is B's, out of A's account.
    with pytest.raises(PermissionDeniedError):
        await request(
            attacker.nc, b.directed_task(WORKER, victim.workflow, "say"), b"{}", timeout_s=3
        )
    info = await engine_nc.jetstream().consumer_info(stream, name)
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_tenant_cannot_make_its_own_directed_consumer(attacker: Attacker) -> None:
    a = Scope(attacker.tenant)
    stream = tasks_stream_name(attacker.tenant)
    mine = ConsumerConfig(
        durable_name="mine",
        ack_policy=AckPolicy.EXPLICIT,
        filter_subject=a.directed_filter("someoneelse"),
    )
    for subject in (
        f"$JS.API.CONSUMER.CREATE.{stream}.mine",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.mine",
    ):
        body = orjson.dumps({"stream_name": stream, "config": mine.as_dict()})
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)
