"""Tailing a tenant's whole stream in order, in batches, from a given sequence.

An ordered consumer built on pull: an ephemeral, unacknowledged, in-memory consumer from
``start_seq``. Its consumer sequence counts deliveries 1, 2, 3...; a gap (a delivery lost
in a reconnect) or a consumer the server forgot makes it start over from the message after
the last one handed out, so nothing is skipped or handed out twice.
"""

from __future__ import annotations

import contextlib
import logging
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventstore import Record, to_record
from schemas import stream_name

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 5.0


class Tail:
    def __init__(
        self,
        nc: NATS,
        tenant: str,
        start_seq: int,
        *,
        batch_size: int = 500,
        gather_s: float = 0.02,
        idle_poll_s: float = 0.25,
    ) -> None:
        self.nc = nc
        self.stream = stream_name(tenant)
        self.next_seq = max(start_seq, 1)
        self.batch_size = max(batch_size, 1)
        self.gather_s = gather_s
        self.idle_poll_s = idle_poll_s
        self._sub: nats.js.JetStreamContext.PullSubscription | None = None
        self._next_cseq = 1
        self._idle_since = time.monotonic()

    async def _open(self) -> nats.js.JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
        )
        sub = await self.nc.jetstream().pull_subscribe("", stream=self.stream, config=config)
        self._next_cseq = 1
        self._idle_since = time.monotonic()
        return sub

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            # The server drops the consumer after inactive_threshold anyway.
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _fetch(
        self, sub: nats.js.JetStreamContext.PullSubscription, n: int, wait_s: float
    ) -> list[Msg]:
        try:
            return list(await sub.fetch(n, timeout=wait_s))
        except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
            return []

    async def next_batch(self) -> list[Record]:
        """Up to ``batch_size`` records in stream order; ``[]`` after an idle poll."""
        if self._sub is None:
            self._sub = await self._open()
        sub = self._sub
        msgs = await self._fetch(sub, 1, self.idle_poll_s)
        if not msgs:
            if time.monotonic() - self._idle_since > HEALTH_CHECK_S:
                await self._check(sub)
            return []
        if self.batch_size > 1:
            msgs += await self._fetch(sub, self.batch_size - 1, self.gather_s)
        self._idle_since = time.monotonic()
        out: list[Record] = []
        for msg in msgs:
            meta = msg.metadata
            if meta.sequence.consumer != self._next_cseq or meta.sequence.stream < self.next_seq:
                log.warning(
                    "tail of %s: delivery %d (stream seq %d) out of order, restarting at %d",
                    self.stream,
                    meta.sequence.consumer,
                    meta.sequence.stream,
                    self.next_seq,
                )
                await self.close()
                break
            self._next_cseq += 1
            self.next_seq = meta.sequence.stream + 1
            out.append(to_record(msg))
        return out

    async def _check(self, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        self._idle_since = time.monotonic()
        try:
            await sub.consumer_info()
        except nats.js.errors.NotFoundError:
            log.warning("tail of %s: consumer lost, restarting at %d", self.stream, self.next_seq)
            await self.close()
