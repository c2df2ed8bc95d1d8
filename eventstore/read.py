"""Reading the log back: replay a filtered slice of a stream in order, then stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence

import attrs
import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventstore.connection import request
from eventstore.errors import ReadError
from schemas.subjects import live_stream_name, stream_name


@attrs.frozen
class Record:
    """One stored message: where it sits in the stream, and what it says."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    time: dt.datetime | None = None  # when the stream stored it


def to_record(msg: Msg) -> Record:
    meta = msg.metadata
    return Record(meta.sequence.stream, msg.subject, msg.data, msg.headers, meta.timestamp)


async def last_seq(nc: NATS, tenant: str) -> int:
    info = await nc.jetstream().stream_info(stream_name(tenant))
    return int(info.state.last_seq)


async def replay(
    nc: NATS,
    tenant: str,
    subjects: Sequence[str] = (),
    *,
    start_seq: int = 1,
    until_seq: int | None = None,
    batch: int = 512,
) -> AsyncIterator[Record]:
    """Yield the stored messages matching ``subjects`` from ``start_seq`` up to ``until_seq``
    (default: the stream's last sequence when the replay starts), in stream order."""
    js = nc.jetstream()
    stream = stream_name(tenant)
    end = until_seq if until_seq is not None else await last_seq(nc, tenant)
    if end < start_seq:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start_seq, 1),
        inactive_threshold=30.0,
        mem_storage=True,
        max_waiting=1,
    )
    # nats-py sets filter_subject from its subject argument, so a single filter goes there.
    single = subjects[0] if len(subjects) == 1 else ""
    if len(subjects) > 1:
        config.filter_subjects = list(subjects)
    sub = await js.pull_subscribe(single, stream=stream, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except nats.errors.TimeoutError:
                return  # nothing more matches
            for msg in msgs:
                meta = msg.metadata
                if meta.sequence.stream > end:
                    return
                yield to_record(msg)
                if meta.sequence.stream == end or meta.num_pending == 0:
                    return
    finally:
        await sub.unsubscribe()


async def follow(nc: NATS, tenant: str, subject: str) -> AsyncIterator[Record]:
    """Yield every stored message on ``subject`` from the start, then new ones as they come."""
    async for record in follow_stream(nc, stream_name(tenant), subject):
        yield record


async def follow_stream(nc: NATS, stream: str, subject: str) -> AsyncIterator[Record]:
    """An ordered consumer on ``stream``: survives reconnects, never skips or repeats."""
    sub = await nc.jetstream().subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        async for msg in sub.messages:
            yield to_record(msg)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


async def latest(nc: NATS, tenant: str, subject: str) -> list[Record]:
    """The last heartbeat of every worker matching ``subject`` (the liveness stream)."""
    js = nc.jetstream()
    stream = live_stream_name(tenant)
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[Record] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=0.5)
            except nats.errors.TimeoutError:
                return out
            for msg in msgs:
                out.append(to_record(msg))
                if msg.metadata.num_pending == 0:
                    return out
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


DIRECT_GET = "$JS.API.DIRECT.GET"


def _direct_record(msg: Msg) -> Record:
    headers = dict(msg.headers or {})
    stamp = headers.get("Nats-Time-Stamp")
    when = dt.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00") if stamp else None
    return Record(
        int(headers.get("Nats-Sequence", 0)),
        headers.get("Nats-Subject", ""),
        msg.data,
        headers,
        when,
    )


async def direct_last(
    nc: NATS, tenant: str, subject: str, *, timeout_s: float = 2.0
) -> Record | None:
    """The last message stored on ``subject`` in the tenant's log (a direct get: what a
    tenant may read of its own log), or ``None``."""
    reply = await request(
        nc, f"{DIRECT_GET}.{stream_name(tenant)}.{subject}", b"", timeout_s=timeout_s
    )
    status = (reply.headers or {}).get("Status")
    if status == "404":
        return None
    if status:
        raise ReadError(f"direct get of {subject} failed: {status} {reply.headers}")
    return _direct_record(reply)


async def direct_history(
    nc: NATS,
    tenant: str,
    subject: str,
    *,
    start_seq: int = 1,
    batch: int = 256,
    timeout_s: float = 5.0,
) -> AsyncIterator[Record]:
    """Every stored message on ``subject`` (wildcards allowed) from ``start_seq``, in order,
    through batched direct gets: no consumer is created, so a tenant may do it."""
    stream = stream_name(tenant)
    seq = start_seq
    while True:
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=queue.put)
        try:
            body = orjson.dumps({"seq": seq, "next_by_subj": subject, "batch": batch})
            await nc.publish(f"{DIRECT_GET}.{stream}", body, reply=inbox)
            pending = 0
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout_s)
                except TimeoutError:
                    raise ReadError(f"reading {subject} from {stream} timed out") from None
                status = (msg.headers or {}).get("Status")
                if status == "404":
                    return
                if status == "204":  # end of this batch
                    pending = int((msg.headers or {}).get("Nats-Num-Pending", 0))
                    break
                if status:
                    raise ReadError(f"reading {subject} from {stream}: {status}")
                record = _direct_record(msg)
                seq = record.seq + 1
                yield record
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if pending == 0:
            return
