"""Stream and consumer provisioning. Idempotent: safe to call on every start."""

from __future__ import annotations

import dataclasses
import logging

import attrs
from nats.aio.client import Client as Connection
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.errors import NotFoundError

from eventstore.errors import ConfigError
from eventstore.snapshot import ensure_snapshot_bucket, translated
from schemas.subjects import (
    Scope,
    check_name,
    live_stream_name,
    live_subjects,
    log_subjects,
    schedules_stream_name,
    schedules_subjects,
    stream_name,
    tasks_stream_name,
    tasks_subjects,
)

log = logging.getLogger(__name__)


DISPATCHER_CONSUMER = "dispatcher"
FIRES_CONSUMER = "dispatcher-fires"
DISPATCHER_ACK_WAIT_S = 5.0


@attrs.frozen
class StreamLimits:
    """A tenant's log quota: ``max_bytes`` (-1: none). A full log refuses new messages
    (discard new) and never drops old ones. ``replicas``: how many NATS cluster nodes hold
    a copy of each of the tenant's streams (1 on a single server; 3 on a 3-node cluster
    survives the loss of one node: docs/scaling.md)."""

    max_bytes: int = -1
    duplicate_window_s: float = 120.0
    max_msg_size: int = 1024 * 1024
    replicas: int = attrs.field(default=1, validator=attrs.validators.in_(range(1, 6)))


LIVE_MAX_BYTES = 16 * 1024 * 1024
# What a tenant's timers are budgeted in its account's storage (a few hundred bytes each).
SCHEDULES_MAX_BYTES = 16 * 1024 * 1024


class StreamConfigError(ConfigError):
    """A stream the server stored with a configuration weaker than the log requires."""


def log_stream_config(tenant: str, limits: StreamLimits = StreamLimits()) -> StreamConfig:
    """The append-only log: nothing a tenant sends can remove or replace history (no
    rollup, no per-message TTL, no schedules, no counters; no purge, no delete; limits
    refuse new messages instead of dropping old ones)."""
    return StreamConfig(
        name=stream_name(tenant),
        description=f"natchet log for tenant {tenant}",
        subjects=log_subjects(tenant),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=limits.max_bytes,
        max_msg_size=limits.max_msg_size,
        duplicate_window=limits.duplicate_window_s,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
        allow_msg_ttl=False,
        allow_msg_schedules=False,
        allow_atomic=True,
        num_replicas=limits.replicas,
    )


def tasks_stream_config(tenant: str, limits: StreamLimits = StreamLimits()) -> StreamConfig:
    """The task queues: a work queue sourced from the log's ``tasks`` area, so the queue
    groups are its only consumers and an acked task leaves it (the log keeps it)."""
    return StreamConfig(
        name=tasks_stream_name(tenant),
        description=f"natchet task queues for tenant {tenant} (sourced from the log)",
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=limits.max_bytes,
        max_msg_size=limits.max_msg_size,
        sources=[StreamSource(name=stream_name(tenant), filter_subject=tasks_subjects(tenant))],
        deny_delete=True,
        deny_purge=True,
        num_replicas=limits.replicas,
    )


def live_stream_config(tenant: str, replicas: int = 1) -> StreamConfig:
    """Worker heartbeats: the last one per worker, gone after its TTL. Not history."""
    return StreamConfig(
        name=live_stream_name(tenant),
        description=f"natchet worker liveness for tenant {tenant}",
        subjects=[live_subjects(tenant)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_bytes=LIVE_MAX_BYTES,
        max_msgs_per_subject=1,
        allow_msg_ttl=True,
        allow_direct=True,
        num_replicas=replicas,
    )


def schedules_stream_config(tenant: str, replicas: int = 1) -> StreamConfig:
    """The tenant's timers: one message schedule per pending cron tick or scheduled run,
    and the fires the server stores for them. Message schedules force rollups on and
    purges allowed: that is why they live here and never in the log. Engine only. The
    server refuses "discard new" with schedules, and "discard old" would drop pending
    timers silently: so the stream has no limit of its own, only the account's storage
    (a full account refuses a new timer, and the dispatcher retries)."""
    return StreamConfig(
        name=schedules_stream_name(tenant),
        description=f"natchet timers (crons, scheduled runs) for tenant {tenant}",
        subjects=schedules_subjects(tenant),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        allow_msg_schedules=True,
        allow_rollup_hdrs=True,
        num_replicas=replicas,
    )


def log_weaknesses(config: StreamConfig, expected: StreamConfig) -> list[str]:
    """How a stored log configuration falls short of append-only; empty when it does not."""
    checks = [
        (config.deny_delete, "deny_delete is off"),
        (config.deny_purge, "deny_purge is off"),
        (not config.allow_rollup_hdrs, "rollup headers are allowed"),
        (not config.allow_msg_ttl, "per-message TTLs are allowed"),
        (not config.allow_msg_schedules, "message schedules are on (they force rollup on)"),
        (not config.allow_msg_counter, "message counters are on"),
        (not config.subject_delete_marker_ttl, "subject delete markers are on"),
        (not config.sealed, "the stream is sealed"),
        (config.retention == RetentionPolicy.LIMITS, f"retention is {config.retention}"),
        (config.discard == DiscardPolicy.NEW, "a full log discards old messages"),
        (not config.max_age, f"messages expire after {config.max_age}s"),
        ((config.max_msgs or -1) < 0, f"at most {config.max_msgs} messages are kept"),
        (config.max_msgs_per_subject < 0, "messages per subject are limited"),
        (sorted(config.subjects or []) == sorted(expected.subjects or []), "other subjects"),
        (not config.mirror and not config.sources, "it mirrors or sources another stream"),
        (not config.subject_transform, "it transforms subjects"),
    ]
    return [why for ok, why in checks if not ok]


@attrs.frozen
class LogGuarantees:
    """What a tenant's log, as the server stores it, promises about its history: its
    ``stream``, whether it refuses deleting a message (``deny_delete``) and purging
    (``deny_purge``), and every way it falls short of append-only (``weaknesses``: the
    check the engine makes before it serves the tenant)."""

    stream: str
    deny_delete: bool
    deny_purge: bool
    weaknesses: tuple[str, ...]

    @property
    def append_only(self) -> bool:
        return not self.weaknesses


async def log_guarantees(conn: Connection, tenant: str) -> LogGuarantees:
    """The tenant's log's stored configuration, read from the server (one stream info)."""
    expected = log_stream_config(tenant)
    name = str(expected.name)
    async with translated(f"reading the configuration of stream {name}"):
        stored = (await conn.jetstream().stream_info(name)).config
    return LogGuarantees(
        name,
        bool(stored.deny_delete),
        bool(stored.deny_purge),
        tuple(log_weaknesses(stored, expected)),
    )


async def _ensure(js: JetStreamContext, config: StreamConfig) -> StreamConfig:
    """Create ``config``'s stream if missing, or raise its replica count to ``config``'s;
    return the configuration the server stored."""
    name = str(config.name)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = await js.add_stream(config)
        log.info("created stream %s (%d replicas)", name, info.config.num_replicas)
        return info.config
    return await scale(js, info.config, config.num_replicas or 1)


async def scale(js: JetStreamContext, stored: StreamConfig, replicas: int) -> StreamConfig:
    """Give a stream at least ``replicas`` copies (the server copies the data; nothing else
    of its configuration changes). Never fewer: an engine started without the setting must
    not take copies away from a cluster's streams (scaling down is an operator's act:
    docs/scaling.md). A cluster with fewer nodes refuses it, and says so."""
    if (stored.num_replicas or 1) >= replicas:
        return stored
    before = stored.num_replicas
    stored.num_replicas = replicas
    info = await js.update_stream(stored)
    log.info("stream %s: %d replicas, was %d", stored.name, replicas, before)
    return info.config


async def ensure_tenant_stream(
    conn: Connection, tenant: str, limits: StreamLimits = StreamLimits()
) -> None:
    """The tenant's log, task queues, liveness streams and snapshot bucket. Refuses
    (``StreamConfigError``) a log the server stored weaker than :func:`log_stream_config`,
    e.g. one made by an older natchet or changed by hand; applies a changed quota."""
    async with translated(f"setting up the streams of {tenant}"):
        await _ensure_tenant_stream(conn.jetstream(), tenant, limits)
    # Beside the log, never in it: snapshots are replaced, the log is append-only.
    await ensure_snapshot_bucket(conn, tenant, limits.max_bytes, limits.replicas)


async def _ensure_tenant_stream(js: JetStreamContext, tenant: str, limits: StreamLimits) -> None:
    expected = log_stream_config(tenant, limits)
    stored = await _ensure(js, expected)
    stored = await _add_subjects(js, stored, expected)
    weak = log_weaknesses(stored, expected)
    if weak:
        raise StreamConfigError(
            f"stream {expected.name} is not append-only: {'; '.join(weak)}. natchet will not "
            "serve this tenant on it: recreate the stream (moving its data) and restart"
        )
    await _quota(js, stored, expected)
    tasks = tasks_stream_config(tenant, limits)
    await _quota(js, await _ensure(js, tasks), tasks)
    await _ensure(js, live_stream_config(tenant, limits.replicas))
    schedules = schedules_stream_config(tenant, limits.replicas)
    stored_schedules = await _ensure(js, schedules)
    if not stored_schedules.allow_msg_schedules:
        raise StreamConfigError(
            f"stream {schedules.name} does not allow message schedules: crons and scheduled "
            "runs would never fire. Delete it (it holds only timers; the log re-arms them) "
            "and restart"
        )


async def _add_subjects(
    js: JetStreamContext, stored: StreamConfig, expected: StreamConfig
) -> StreamConfig:
    """A log made by an older natchet captures fewer areas (issue 14 added crons and
    schedules): add the missing subjects, and change nothing else. Subjects it has that
    this natchet does not expect are left for the check to refuse."""
    have, want = set(stored.subjects or []), set(expected.subjects or [])
    if have >= want or not have <= want:
        return stored
    stored.subjects = sorted(want, key=(expected.subjects or []).index)
    info = await js.update_stream(stored)
    log.info("stream %s: now captures %s", expected.name, ", ".join(sorted(want - have)))
    return info.config


async def _quota(js: JetStreamContext, stored: StreamConfig, expected: StreamConfig) -> None:
    """Apply a changed quota (the only setting natchet changes on a stream it made)."""
    if stored.max_bytes != expected.max_bytes:
        await js.update_stream(dataclasses.replace(expected, num_replicas=stored.num_replicas))
        log.info("stream %s: quota now %s bytes", expected.name, expected.max_bytes)


def task_consumer_name(scope: Scope, workflow: str) -> str:
    """``<namespace>~<workflow>``: ``~`` is in no namespace or workflow name, so two
    namespaces can never share a queue group (``a-b``/``c`` and ``a``/``b-c`` once did)."""
    return f"{scope.namespace}~{check_name('workflow', workflow)}"


@attrs.frozen
class TaskConsumerSettings:
    """Redelivery timing for tasks: a silent worker loses its task after ``ack_wait_s``
    (a live worker says ``in_progress`` every third of that)."""

    ack_wait_s: float = 5.0


async def ensure_task_consumer(
    conn: Connection,
    scope: Scope,
    workflow: str,
    settings: TaskConsumerSettings = TaskConsumerSettings(),
) -> str:
    """The queue group of a workflow: one durable pull consumer all its workers share, on
    the tenant's task queues. The engine creates it when it sees the workflow registered
    (tenants cannot create consumers); tasks offered before that wait in the work queue."""
    name = task_consumer_name(scope, workflow)
    config = task_consumer_config(
        name, f"queue group of workflow {workflow} in {scope.prefix}",
        scope.tasks_filter(workflow), settings, max_waiting=1024,
    )  # fmt: skip
    # Create, or update the editable settings (ack_wait) of an existing queue group.
    async with translated(f"creating queue group {name}"):
        await create_or_keep(conn.jetstream(), tasks_stream_name(scope.tenant), config)
    return name


def task_consumer_config(
    name: str,
    description: str,
    filter_subject: str,
    settings: TaskConsumerSettings,
    *,
    max_waiting: int,
    inactive_s: float | None = None,
) -> ConsumerConfig:
    """A consumer of tasks (a workflow's queue group, or one worker's directed tasks): each
    task acknowledged on its own, redelivered after ``ack_wait_s`` of silence, forever."""
    return ConsumerConfig(
        durable_name=name,
        description=description,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_waiting=max_waiting,
        max_ack_pending=-1,
        inactive_threshold=inactive_s,
    )


async def create_or_keep(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update it when its filter or ``ack_wait`` differ;
    leave it alone when they are the same. Creating is a request to the JetStream meta
    leader, reading its info one to the consumer's own leader: on a NATS cluster that lost
    its meta leader (docs/scaling.md), a restarted dispatcher finds its consumers without
    waiting for a new one to be elected."""
    try:
        stored = (await js.consumer_info(stream, str(config.durable_name))).config
    except NotFoundError:
        stored = None
    if (
        stored is None
        or stored.filter_subject != config.filter_subject
        or stored.ack_wait != config.ack_wait
    ):
        await js.add_consumer(stream, config)


def dispatcher_filters(tenant: str) -> list[str]:
    """What the dispatcher decides on: events, registrations, run requests and results. Its
    consumer reads the whole log and the dispatcher keeps these (``Patterns``): a consumer
    with several filters costs the server a walk of every block's subject tree per fetch."""
    return [
        f"{tenant}.*.events.>",
        f"{tenant}.*.workflows.*",
        f"{tenant}.*.runs.*.requested",
        f"{tenant}.*.runs.*.result",
        f"{tenant}.*.runs.*.assigned",
        f"{tenant}.*.runs.*.cancel_requested",
        f"{tenant}.*.runs.*.waiting",
        f"{tenant}.*.crons.*.created",
        f"{tenant}.*.crons.*.deleted",
        f"{tenant}.*.schedules.*.created",
        f"{tenant}.*.schedules.*.deleted",
    ]


def dispatcher_consumer_name(partition: int = 0) -> str:
    """The durable consumer of the log that partition ``partition`` of a tenant's dispatch
    reads (issue 16): partition 0 keeps the one a single dispatcher always had, so a tenant
    split later goes on where it was; partition ``p`` > 0 has ``dispatcher-<p>``."""
    if partition < 0:
        raise ValueError(f"no partition {partition}")
    return DISPATCHER_CONSUMER if partition == 0 else f"{DISPATCHER_CONSUMER}-{partition}"


async def ensure_dispatcher_consumer(
    conn: Connection, tenant: str, name: str = DISPATCHER_CONSUMER
) -> str:
    """The durable consumer ``name`` of the tenant's log (every partition of its dispatch
    reads the whole log through one of its own: :func:`dispatcher_consumer_name`)."""
    async with translated(f"setting up the dispatcher consumer {name} of {tenant}"):
        return await _ensure_dispatcher_consumer(conn.jetstream(), tenant, name)


def _dispatcher_config(start_seq: int = 0, name: str = DISPATCHER_CONSUMER) -> ConsumerConfig:
    """The whole log, each message acknowledged on its own. Not cumulatively (``AckPolicy.ALL``):
    acking the last of a batch would also ack what was delivered to a dispatcher killed before
    it decided (or lost in flight), and those inputs would never come back."""
    return ConsumerConfig(
        durable_name=name,
        description="natchet dispatcher inputs",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
        opt_start_seq=start_seq or None,
        # Short, so what a killed dispatcher had fetched comes back to its successor quickly;
        # a redelivered input that was already decided decides nothing.
        ack_wait=DISPATCHER_ACK_WAIT_S,
        max_deliver=-1,
        max_ack_pending=10_000,
    )


async def _ensure_dispatcher_consumer(
    js: JetStreamContext, tenant: str, name: str = DISPATCHER_CONSUMER
) -> str:
    stream = stream_name(tenant)
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        await js.add_consumer(stream, _dispatcher_config(name=name))
        return name
    old = info.config
    if old.filter_subjects or old.filter_subject:
        # An older engine's consumer (filtered): start a new one after what it had
        # acknowledged. Everything before its ack floor was decided; what came
        # after is read again, and an input already decided decides nothing.
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        log.info(
            "dispatcher consumer %s of %s is an older kind; recreating it at %d",
            name,
            tenant,
            floor,
        )
        await js.delete_consumer(stream, name)
        await js.add_consumer(stream, _dispatcher_config(floor + 1, name))
    elif old.ack_wait != DISPATCHER_ACK_WAIT_S:
        # create-or-update: ack_wait is editable, the start is not.
        config = _dispatcher_config(name=name)
        config.deliver_policy, config.opt_start_seq = old.deliver_policy, old.opt_start_seq
        await js.add_consumer(stream, config)
    return name


async def ensure_fires_consumer(conn: Connection, tenant: str) -> str:
    """The dispatcher's durable consumer of its timers' fires (``schedules-<t>``)."""
    config = ConsumerConfig(
        durable_name=FIRES_CONSUMER,
        description="natchet dispatcher: timers come due",
        filter_subject=f"{tenant}.*.fires.>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=DISPATCHER_ACK_WAIT_S,
        max_deliver=-1,
    )
    async with translated(f"setting up the timer consumer of {tenant}"):
        await create_or_keep(conn.jetstream(), schedules_stream_name(tenant), config)
    return FIRES_CONSUMER
