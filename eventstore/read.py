"""Reading the log back: replay a filtered slice of a stream in order, then stop."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence

import attrs
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas.subjects import stream_name


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
    """The last stored message of every subject matching ``subject`` (e.g. heartbeats)."""
    js = nc.jetstream()
    info = await js.stream_info(stream_name(tenant))
    if info.state.messages == 0:
        return []
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        filter_subject=subject,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(subject, stream=stream_name(tenant), config=config)
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
