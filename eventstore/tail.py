"""Reading a stream in order, in batches, from a given sequence: the tail every reader of
the log is built on (the projector, replays, the dispatcher's rebuild).

An ordered consumer built on pull: an ephemeral, unacknowledged, in-memory consumer from
``start_seq``. One subject is the consumer's filter; several are matched here, on an
unfiltered consumer (``eventstore.match``): a consumer with several filters makes the server
walk every block's subject tree on each fetch, which grows with the stream. Its consumer
sequence counts deliveries 1, 2, 3...; a gap (a delivery lost in a reconnect) or a consumer
the server forgot makes it start over from the message after the last one handed out, so
nothing is skipped or handed out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from eventstore import rawsub
from eventstore.batches import Batches
from eventstore.errors import ReadError, TransportError
from eventstore.match import Patterns
from eventstore.rawbatches import Delivered, RawBatches
from eventstore.records import Record, ack_info, stream_last_seq, to_record

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 5.0


class Tail:
    """``await tail.next_batch()``: the next records of ``stream`` in order, or ``[]`` after
    an idle poll (nothing new yet)."""

    def __init__(
        self,
        conn: Connection,
        stream: str,
        start_seq: int,
        *,
        subjects: Sequence[str] = (),
        batch_size: int = 500,
        gather_s: float = 0.02,
        idle_poll_s: float = 0.25,
        linger_s: float = 0.0,
        raw: bool = False,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.subjects = list(subjects)
        # Several subjects: read everything, keep what matches (see the module's doc).
        self._keep = Patterns(self.subjects if len(self.subjects) > 1 else ())
        self.next_seq = max(start_seq, 1)
        self.batch_size = max(batch_size, 1)
        self.gather_s = gather_s
        self.idle_poll_s = idle_poll_s
        # A batch not full after the first fetch waits this long for more, once: fewer,
        # larger batches for a reader whose cost is mostly per batch (the projector).
        self.linger_s = linger_s
        # Read off the wire without nats-py's Msg (eventstore.rawbatches): the same records.
        # (Unless this nats-py lacks the internals it reads through: then the Msg path.)
        self.raw = raw and rawsub.supported(conn)
        self._sub: Batches | RawBatches | None = None
        self._next_cseq = 1
        self._idle_since = time.monotonic()

    async def _open(self) -> Batches | RawBatches:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        try:
            info = await self.conn.jetstream().add_consumer(self.stream, config)
        except nats.js.errors.NotFoundError:
            raise ReadError(f"stream {self.stream} does not exist") from None
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.stream}: {exc}") from None
        self._next_cseq = 1
        self._idle_since = time.monotonic()
        if self.raw:
            return RawBatches(self.conn, self.stream, info.name)
        return Batches(self.conn, self.stream, info.name)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()
            # The server drops the consumer after inactive_threshold anyway.
            with contextlib.suppress(nats.errors.Error):
                await self.conn.jetstream().delete_consumer(self.stream, sub.consumer)

    async def _fetch(
        self, sub: Batches | RawBatches, n: int, wait_s: float
    ) -> list[Msg] | list[Delivered]:
        try:
            if isinstance(sub, RawBatches):
                return await sub.fetch_deliveries(n, wait_s)
            return await sub.fetch(n, wait_s)
        except TransportError:
            await self.close()
            raise

    async def next_batch(self) -> list[Record]:
        """Up to ``batch_size`` records in stream order; ``[]`` after an idle poll, or when
        none of the batch read matched ``subjects``."""
        if self._sub is None:
            self._sub = await self._open()
        sub = self._sub
        msgs: list[Any] = await self._fetch(sub, 1, self.idle_poll_s)
        if not msgs:
            if time.monotonic() - self._idle_since > HEALTH_CHECK_S:
                await self._check(sub)
            return []
        if self.batch_size > 1:
            msgs += await self._fetch(sub, self.batch_size - 1, self.gather_s)
        if self.linger_s > 0 and len(msgs) < self.batch_size:
            await asyncio.sleep(self.linger_s)
            msgs += await self._fetch(sub, self.batch_size - len(msgs), self.gather_s)
        self._idle_since = time.monotonic()
        if isinstance(sub, RawBatches):
            return await self._records(msgs)
        out: list[Record] = []
        for msg in msgs:
            info = ack_info(msg)
            if not self._in_order(info.consumer_seq, info.stream_seq):
                await self.close()
                break
            if msg.subject in self._keep:
                out.append(to_record(msg, info))
        return out

    async def _records(self, deliveries: list[Delivered]) -> list[Record]:
        """:meth:`next_batch`'s records of a raw read."""
        out: list[Record] = []
        keep = self._keep
        for d in deliveries:
            record, cseq = d.record, d.consumer_seq
            if cseq < 0:
                d.position()  # raises: not a JetStream delivery
            if not self._in_order(cseq, record.seq):
                await self.close()
                break
            if record.subject in keep:
                out.append(record)
        return out

    def _in_order(self, consumer_seq: int, stream_seq: int) -> bool:
        """Whether this is the next delivery; if so, it is counted as read."""
        if consumer_seq != self._next_cseq or stream_seq < self.next_seq:
            log.warning(
                "tail of %s: delivery %d (stream seq %d) out of order, restarting at %d",
                self.stream,
                consumer_seq,
                stream_seq,
                self.next_seq,
            )
            return False
        self._next_cseq += 1
        self.next_seq = stream_seq + 1
        return True

    async def pending(self) -> int:
        """How many messages the server has yet to hand out (-1: unknown), and those it
        handed out not read yet: those matching the one subject, or every message after
        the last read when several are matched here (so 0 still means none matching is
        left)."""
        if self._sub is None:
            self._sub = await self._open()
        try:
            info = await self._info(self._sub)
        except nats.js.errors.NotFoundError:
            await self.close()
            return -1
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.stream}: {exc}") from None
        return int(info.num_pending or 0) + self._sub.queued

    async def _info(self, sub: Batches | RawBatches) -> ConsumerInfo:
        info: ConsumerInfo = await self.conn.jetstream().consumer_info(self.stream, sub.consumer)
        return info

    async def _check(self, sub: Batches | RawBatches) -> None:
        self._idle_since = time.monotonic()
        try:
            await self._info(sub)
        except nats.js.errors.NotFoundError:
            log.warning("tail of %s: consumer lost, restarting at %d", self.stream, self.next_seq)
            await self.close()
        except nats.errors.Error as exc:
            log.warning("tail of %s: cannot check its consumer: %s", self.stream, exc)


async def read_to_end(
    conn: Connection,
    stream: str,
    subjects: Sequence[str] = (),
    *,
    start_seq: int = 1,
    until_seq: int | None = None,
    batch_size: int = 500,
    raw: bool = False,
) -> AsyncIterator[Record]:
    """Every stored record matching ``subjects`` from ``start_seq`` through ``until_seq``
    (default: the stream's last sequence when the read starts), in order. It ends when the
    next record is past that end or the server says none is left to hand out, never on a
    pause (a lull is not the end): a reader that decides from what it read never decides
    from part of the history. ``raw`` reads the same records past nats-py's ``Msg``
    (:mod:`eventstore.rawbatches`): what a reader of the whole log uses."""
    end = until_seq if until_seq is not None else await stream_last_seq(conn, stream)
    if end < start_seq:
        return
    tail = Tail(
        conn, stream, start_seq, subjects=subjects, batch_size=batch_size, gather_s=0.01, raw=raw
    )
    try:
        while tail.next_seq <= end:
            before = tail.next_seq
            batch = await tail.next_batch()
            for record in batch:
                if record.seq > end:
                    return
                yield record
            # Every message up to ``end`` exists, and none matching is left to hand out: a
            # filtered read ends before reaching ``end`` (checked in that order: a message
            # stored between the two checks is counted as pending).
            if (
                tail.next_seq == before
                and await stream_last_seq(conn, stream) >= end
                and await tail.pending() == 0
            ):
                return
    finally:
        await tail.close()
