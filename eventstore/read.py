"""Reading the log back: replay a filtered slice of a stream in order, then stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventstore.connection import request
from eventstore.errors import ReadError
from eventstore.records import Record, ack_info, stream_last_seq, to_record
from eventstore.tail import read_to_end
from schemas.subjects import live_stream_name, stream_name


async def last_seq(nc: NATS, tenant: str) -> int:
    return await stream_last_seq(nc, stream_name(tenant))


async def replay(
    nc: NATS,
    tenant: str,
    subjects: Sequence[str] = (),
    *,
    start_seq: int = 1,
    until_seq: int | None = None,
    batch: int = 512,
) -> AsyncIterator[Record]:
    """The tenant's log matching ``subjects`` from ``start_seq`` through ``until_seq``
    (default: its last sequence when the replay starts), in stream order, read to that end
    whatever the pauses (``eventstore.tail.read_to_end``)."""
    async for record in read_to_end(
        nc,
        stream_name(tenant),
        subjects,
        start_seq=start_seq,
        until_seq=until_seq,
        batch_size=batch,
    ):
        yield record


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
                ack = ack_info(msg)
                out.append(to_record(msg, ack))
                if ack.pending == 0:
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


async def direct_get(nc: NATS, tenant: str, seq: int, *, timeout_s: float = 2.0) -> Record | None:
    """The message at stream sequence ``seq`` of the tenant's log (a direct get), or
    ``None`` when there is none."""
    body = orjson.dumps({"seq": seq})
    reply = await request(nc, f"{DIRECT_GET}.{stream_name(tenant)}", body, timeout_s=timeout_s)
    status = (reply.headers or {}).get("Status")
    if status == "404":
        return None
    if status:
        raise ReadError(f"direct get of sequence {seq} failed: {status} {reply.headers}")
    return _direct_record(reply)


async def direct_history(
    nc: NATS,
    tenant: str,
    subject: str,
    *,
    start_seq: int = 1,
    batch: int = 256,
    timeout_s: float = 5.0,
) -> AsyncGenerator[Record, None]:
    """Every stored message on ``subject`` (wildcards allowed) from ``start_seq``, in order,
    through batched direct gets: no consumer is created, so a tenant may do it."""
    async for record in direct_stream_history(
        nc, stream_name(tenant), subject, start_seq=start_seq, batch=batch, timeout_s=timeout_s
    ):
        yield record


async def direct_stream_history(
    nc: NATS,
    stream: str,
    subject: str,
    *,
    start_seq: int = 1,
    batch: int = 256,
    timeout_s: float = 5.0,
) -> AsyncGenerator[Record, None]:
    """:func:`direct_history` of any stream (one with ``allow_direct``)."""
    seq = start_seq
    while True:
        end = _BatchEnd()
        request_ = {"seq": seq, "next_by_subj": subject, "batch": batch}
        batch_records = _batched_get(nc, stream, request_, subject, timeout_s, end)
        async with contextlib.aclosing(batch_records):
            async for record in batch_records:
                seq = record.seq + 1
                yield record
        if end.pending == 0:
            return


async def direct_last_per_subject(
    nc: NATS, tenant: str, subject: str, *, batch: int = 10_000, timeout_s: float = 5.0
) -> list[Record]:
    """The last stored message of every subject matching ``subject`` (wildcards allowed)
    in the tenant's log, in stream order: one batched direct get (``multi_last``), so a
    tenant may do it, and no older history is read. At most ``batch`` subjects."""
    request_ = {"multi_last": [subject], "batch": batch}
    records = _batched_get(nc, stream_name(tenant), request_, subject, timeout_s, _BatchEnd())
    async with contextlib.aclosing(records):
        out = [record async for record in records]
    return sorted(out, key=lambda r: r.seq)


class _BatchEnd:
    """How a batched direct get ended: ``pending`` messages left after it (0: none)."""

    pending = 0


async def _batched_get(
    nc: NATS,
    stream: str,
    request_: dict[str, object],
    subject: str,
    timeout_s: float,
    end: _BatchEnd,
) -> AsyncGenerator[Record, None]:
    """One batched direct get: its records as they come, until the server's closing status
    (404: nothing (more); 204: the batch's end, saying in ``end`` how many are left)."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=queue.put)
    try:
        await nc.publish(f"{DIRECT_GET}.{stream}", orjson.dumps(request_), reply=inbox)
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout_s)
            except TimeoutError:
                raise ReadError(f"reading {subject} from {stream} timed out") from None
            status = (msg.headers or {}).get("Status")
            if status == "404":
                return
            if status == "204":
                end.pending = int((msg.headers or {}).get("Nats-Num-Pending", 0))
                return
            if status:
                raise ReadError(f"reading {subject} from {stream}: {status}")
            yield _direct_record(msg)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
