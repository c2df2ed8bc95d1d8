"""When the log elects a new leader, the task queues' leader steps down, so their sourcing
starts again at once; nothing is skipped or sourced twice across it."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS

from bench.chaos_cluster import stream_leader
from eventstore import StreamLimits, ensure_tenant_stream
from eventstore.sourcing import STEP_DOWN, SourcingNudge
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
