"""Consuming inputs with acknowledgements: a durable pull consumer whose messages the caller
acks once it has acted on them (the dispatcher's inputs)."""

from __future__ import annotations

import contextlib

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Connection
from nats.js import JetStreamContext

from eventstore.errors import ReadError, TransportError
from eventstore.messages import Delivery


class Inputs:
    """The messages of the durable consumer ``consumer`` on ``stream``, fetched in batches;
    each is redelivered after the consumer's ack wait unless the caller acks it."""

    def __init__(self, conn: Connection, stream: str, consumer: str) -> None:
        self.conn = conn
        self.stream = stream
        self.consumer = consumer
        self._sub: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        try:
            self._sub = await self.conn.jetstream().pull_subscribe_bind(
                self.consumer, stream=self.stream
            )
        except nats.js.errors.NotFoundError:
            raise ReadError(f"no consumer {self.consumer} on {self.stream}") from None
        except nats.errors.Error as exc:
            raise TransportError(f"cannot consume {self.stream}: {exc}") from None

    async def fetch(self, n: int, wait_s: float) -> list[Delivery]:
        """Up to ``n`` inputs, waiting at most ``wait_s`` for the first; ``[]`` if none."""
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(n, timeout=wait_s)
        except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
            return []
        except nats.errors.Error as exc:
            raise TransportError(f"fetching from {self.consumer} failed: {exc}") from None
        return [Delivery.of(msg) for msg in msgs]

    async def ack_floor(self) -> int:
        """The consumer's ack floor: the stream sequence up to which every message it handed
        out was acknowledged (0: none yet). It lags acks still on their way."""
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        try:
            info = await self._sub.consumer_info()
        except nats.js.errors.NotFoundError:
            raise ReadError(f"no consumer {self.consumer} on {self.stream}") from None
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.consumer}'s state: {exc}") from None
        return int(info.ack_floor.stream_seq) if info.ack_floor else 0

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
