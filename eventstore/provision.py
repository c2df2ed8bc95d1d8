"""Stream and consumer provisioning. Idempotent: safe to call on every start."""

from __future__ import annotations

import logging

import attrs
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from schemas.subjects import Scope, check_name, stream_name, tenant_subjects

log = logging.getLogger(__name__)

DISPATCHER_CONSUMER = "dispatcher"
DISPATCHER_ACK_WAIT_S = 5.0


@attrs.frozen
class StreamLimits:
    max_bytes: int = -1
    duplicate_window_s: float = 120.0
    max_msg_size: int = 1024 * 1024


def tenant_stream_config(tenant: str, limits: StreamLimits = StreamLimits()) -> StreamConfig:
    return StreamConfig(
        name=stream_name(tenant),
        description=f"natchet log for tenant {tenant}",
        subjects=[tenant_subjects(tenant)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        # Message schedules need discard 'old'; size the limit so it never bites history.
        discard=DiscardPolicy.OLD,
        max_bytes=limits.max_bytes,
        max_msg_size=limits.max_msg_size,
        duplicate_window=limits.duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_msg_ttl=True,
        allow_msg_schedules=True,
        allow_atomic=True,
    )


async def ensure_tenant_stream(
    js: JetStreamContext, tenant: str, limits: StreamLimits = StreamLimits()
) -> None:
    config = tenant_stream_config(tenant, limits)
    try:
        await js.stream_info(config.name)  # type: ignore[arg-type]
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s for %s", config.name, config.subjects)


def task_consumer_name(scope: Scope, workflow: str) -> str:
    return f"tasks-{scope.namespace}-{check_name('workflow', workflow)}"


@attrs.frozen
class TaskConsumerSettings:
    """Redelivery timing for tasks: a silent worker loses its task after ``ack_wait_s``
    (a live worker says ``in_progress`` every third of that)."""

    ack_wait_s: float = 5.0


async def ensure_task_consumer(
    js: JetStreamContext,
    scope: Scope,
    workflow: str,
    settings: TaskConsumerSettings = TaskConsumerSettings(),
) -> str:
    """The queue group of a workflow: one durable pull consumer all its workers share.

    It starts at new messages: the dispatcher offers a workflow's tasks only after the
    workflow is registered, and a worker creates this consumer before it registers.
    """
    name = task_consumer_name(scope, workflow)
    config = ConsumerConfig(
        durable_name=name,
        description=f"queue group of workflow {workflow} in {scope.prefix}",
        filter_subject=scope.tasks_filter(workflow),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_waiting=1024,
        max_ack_pending=-1,
    )
    # Create, or update the editable settings (ack_wait) of an existing queue group.
    await js.add_consumer(stream_name(scope.tenant), config)
    return name


def dispatcher_filters(tenant: str) -> list[str]:
    """What the dispatcher decides on: events, registrations, run requests and results."""
    return [
        f"{tenant}.*.events.>",
        f"{tenant}.*.workflows.*",
        f"{tenant}.*.runs.*.requested",
        f"{tenant}.*.runs.*.result",
        f"{tenant}.*.runs.*.assigned",
        f"{tenant}.*.runs.*.cancel_requested",
    ]


async def ensure_dispatcher_consumer(js: JetStreamContext, tenant: str) -> str:
    config = ConsumerConfig(
        durable_name=DISPATCHER_CONSUMER,
        description="natchet dispatcher inputs",
        filter_subjects=dispatcher_filters(tenant),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        # Short, so what a killed dispatcher had fetched comes back to its successor quickly;
        # a redelivered input that was already decided decides nothing.
        ack_wait=DISPATCHER_ACK_WAIT_S,
        max_deliver=-1,
        max_ack_pending=10_000,
    )
    stream = stream_name(tenant)
    try:
        info = await js.consumer_info(stream, DISPATCHER_CONSUMER)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return DISPATCHER_CONSUMER
    if sorted(info.config.filter_subjects or []) != sorted(config.filter_subjects or []):
        # An older engine's consumer: start it afresh. The dispatcher rebuilds its state from
        # the log and decides only what is not decided yet, so re-reading inputs is safe.
        log.info("dispatcher consumer of %s has old filters; recreating it", tenant)
        await js.delete_consumer(stream, DISPATCHER_CONSUMER)
        await js.add_consumer(stream, config)
    elif info.config.ack_wait != config.ack_wait:
        await js.add_consumer(stream, config)  # create-or-update: ack_wait is editable
    return DISPATCHER_CONSUMER
