"""What the server says about a tenant's queues and consumers, for metrics and health: how
many tasks wait in each workflow's queue group, how far the dispatcher (each partition of
it) has acknowledged the log, and when a message was stored. Read-only; each call is one
or two API requests."""

from __future__ import annotations

import datetime as dt

import attrs
import nats.errors
from nats.aio.client import Client as Connection

from eventstore.errors import ReadError
from eventstore.provision import DISPATCHER_CONSUMER, dispatcher_consumer_name
from eventstore.read import direct_get, direct_stream_history
from eventstore.records import Record
from eventstore.snapshot import translated
from schemas.subjects import live_stream_name, stream_name, tasks_stream_name

PAGE = 256  # the server lists at most this many consumers a request


@attrs.frozen
class QueueStats:
    """One workflow's queue group (``<namespace>~<workflow>`` on the tenant's task queues)."""

    namespace: str
    workflow: str
    pending: int  # tasks no worker has taken yet (the consumer's num_pending)
    in_flight: int  # taken by a worker, not yet acknowledged (num_ack_pending)


def connected(conn: Connection) -> bool:
    """Whether the connection is up now (not reconnecting, not closed)."""
    return bool(conn.is_connected)


async def task_queues(conn: Connection, tenant: str) -> list[QueueStats]:
    """Every queue group of the tenant's workflows, with its counts."""
    stream = tasks_stream_name(tenant)
    out: list[QueueStats] = []
    listed = 0
    async with translated(f"listing the queue groups of {tenant}"):
        js = conn.jetstream()
        while True:
            page = await js.consumers_info(stream, offset=listed or None)
            listed += len(page)
            for info in page:
                namespace, sep, workflow = (info.name or "").partition("~")
                if sep:
                    out.append(
                        QueueStats(
                            namespace,
                            workflow,
                            int(info.num_pending or 0),
                            int(info.num_ack_pending or 0),
                        )
                    )
            if len(page) < PAGE:
                return out


async def dispatcher_ack_floor(conn: Connection, tenant: str, partitions: int = 1) -> int:
    """The sequence of the log up to which the dispatcher acknowledged every input (it acks
    an input once its decision is stored). A tenant whose dispatch has ``partitions`` > 1
    has a consumer per partition, each reading the whole log: the lowest of their floors
    (the partition furthest behind bounds the runs it owns), a partition whose consumer
    does not exist yet counting as 0 (it has decided nothing). Consumers of partitions
    beyond ``partitions`` (left by a larger count) are not read: nobody reads them."""
    if partitions == 1:
        async with translated(f"reading the dispatcher consumer of {tenant}"):
            info = await conn.jetstream().consumer_info(stream_name(tenant), DISPATCHER_CONSUMER)
        return int(info.ack_floor.stream_seq) if info.ack_floor else 0
    floors = await _dispatcher_floors(conn, tenant)
    return min(floors.get(dispatcher_consumer_name(p), 0) for p in range(partitions))


async def _dispatcher_floors(conn: Connection, tenant: str) -> dict[str, int]:
    """The ack floor of every consumer of the tenant's log, by name: one request per
    ``PAGE`` consumers (the log has few: its partitions', and readers' ephemeral ones)."""
    out: dict[str, int] = {}
    listed = 0
    async with translated(f"reading the dispatcher consumers of {tenant}"):
        js = conn.jetstream()
        while True:
            page = await js.consumers_info(stream_name(tenant), offset=listed or None)
            listed += len(page)
            for info in page:
                out[info.name or ""] = int(info.ack_floor.stream_seq) if info.ack_floor else 0
            if len(page) < PAGE:
                return out


async def stored_at(conn: Connection, tenant: str, seq: int) -> dt.datetime | None:
    """When the tenant's log stored message ``seq`` (None: no such message)."""
    record = await direct_get(conn, tenant, seq)
    return None if record is None else record.time


async def heartbeats(conn: Connection, tenant: str) -> list[Record]:
    """The last heartbeat of every worker of the tenant (every namespace) still kept: the
    liveness stream keeps one message per worker, so reading all of it with batched direct
    gets gives them, and creates no consumer (a scrape must not use up the tenant's)."""
    try:
        history = direct_stream_history(conn, live_stream_name(tenant), f"{tenant}.*.workers.*")
        return [record async for record in history]
    except nats.errors.Error as exc:
        raise ReadError(f"cannot read the heartbeats of {tenant}: {exc}") from None
