"""When the log elects a new leader, the task queues' leader steps down, so their sourcing
starts again at once; nothing is skipped or sourced twice across it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.aio.client import Client as NATS

from bench.chaos_cluster import stream_leader
from eventstore import Append, Appender, AppendError, StreamLimits, ensure_tenant_stream
from eventstore.sourcing import STEP_DOWN, SourcingNudge, new_leader
from schemas.subjects import stream_name, tasks_stream_name
from tests.conftest import eventually


async def test_a_new_log_leader_moves_the_task_queues_leader(cluster_nc: NATS) -> None:
    tenant = f"s{uuid.uuid4().hex[:12]}"
    await ensure_tenant_stream(cluster_nc, tenant, StreamLimits(replicas=3))
    js = cluster_nc.jetstream()
    for i in range(5):
        await js.publish(f"{tenant}.default.tasks.w.{i}", b"x", headers={"Nats-Msg-Id": f"a{i}"})
    async with SourcingNudge(cluster_nc, tenant) as nudge:
        tasks_leader = await stream_leader(cluster_nc, tasks_stream_name(tenant))
        await cluster_nc.request(STEP_DOWN + stream_name(tenant), b"", timeout=5)
        await eventually(lambda: nudge.nudges >= 1)

        async def moved() -> bool:
            return await stream_leader(cluster_nc, tasks_stream_name(tenant)) != tasks_leader

        await eventually(moved)
        for i in range(5, 10):
            await js.publish(
                f"{tenant}.default.tasks.w.{i}", b"x", headers={"Nats-Msg-Id": f"a{i}"}
            )

        async def all_sourced() -> bool:
            info = await js.stream_info(tasks_stream_name(tenant))
            return info.state.messages == 10

        await eventually(all_sourced)
        info = await js.stream_info(tasks_stream_name(tenant))
        assert (info.state.first_seq, info.state.last_seq) == (1, 10)  # none twice


async def test_an_append_in_flight_fails_at_once_when_the_log_elects_a_leader(
    cluster_nc: NATS,
) -> None:
    """Told of a new leader, an append nobody answered fails now, not after 10 s."""
    await cluster_nc.subscribe("blackhole.x", cb=_ignore)  # a responder that never acks
    appender = Appender(cluster_nc, timeout_s=30.0)
    sending = asyncio.ensure_future(appender.append_all([Append("blackhole.x", b"{}")]))
    await eventually(lambda: appender._pending)  # the append is out, unanswered
    assert not sending.done()
    new_leader(cluster_nc).set()
    with pytest.raises(AppendError, match="elected a new leader with 1 appends in flight"):
        await asyncio.wait_for(sending, 5)
    await appender.close()


async def _ignore(_msg: object) -> None:
    return None
