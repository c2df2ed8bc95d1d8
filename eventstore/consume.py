"""Consuming inputs with acknowledgements: a durable pull consumer whose messages the caller
acks once it has acted on them (the dispatcher's inputs)."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.aio.client import Client as Connection

from eventstore.batches import Batches
from eventstore.errors import ReadError, TransportError
from eventstore.messages import Delivery


class Inputs:
    """The messages of the durable consumer ``consumer`` on ``stream``, fetched in batches;
    each is redelivered after the consumer's ack wait unless the caller acks it."""

    def __init__(self, conn: Connection, stream: str, consumer: str) -> None:
        self.conn = conn
        self.stream = stream
        self.consumer = consumer
        self._batches = Batches(conn, stream, consumer)

    async def fetch(self, n: int, wait_s: float) -> list[Delivery]:
        """Up to ``n`` inputs, waiting at most ``wait_s`` for the first; ``[]`` if none."""
        return [Delivery.of(msg) for msg in await self._batches.fetch(n, wait_s)]

    async def ack_floor(self) -> int:
        """The consumer's ack floor: the stream sequence up to which every message it handed
        out was acknowledged (0: none yet). It lags acks still on their way."""
        try:
            info = await self.conn.jetstream().consumer_info(self.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            raise ReadError(f"no consumer {self.consumer} on {self.stream}") from None
        except nats.errors.Error as exc:
            raise TransportError(f"cannot read {self.consumer}'s state: {exc}") from None
        return int(info.ack_floor.stream_seq) if info.ack_floor else 0

    async def close(self) -> None:
        await self._batches.close()
