"""``Batches`` and the raw reader's ``RawBatches``: a pull consumer read in batches over one
inbox, on a real JetStream. Every test runs on both readers (``reader``), which must not
differ in what they give."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from eventstore import TransportError
from eventstore.batches import Batches
from eventstore.rawbatches import RawBatches


class Reader:
    """One of the two readers, behind the one call the tests make: ``fetch``'s bodies."""

    def __init__(self, raw: bool, nc: NATS, stream: str, consumer: str = "c") -> None:
        self.raw = raw
        self.batches = (RawBatches if raw else Batches)(nc, stream, consumer)

    async def fetch(self, n: int, timeout_s: float) -> list[int]:
        if self.raw:
            got = await self.batches.fetch_deliveries(n, timeout_s)  # type: ignore[union-attr]
            return [int(d.record.data) for d in got]
        return [int(m.data) for m in await self.batches.fetch(n, timeout_s)]  # type: ignore[union-attr]

    async def close(self) -> None:
        await self.batches.close()


@pytest.fixture(params=[False, True], ids=["msg", "raw"])
def raw(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def stream(nc: NATS) -> AsyncIterator[str]:
    name = f"b{uuid.uuid4().hex[:10]}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.NONE))
    yield name
    await js.delete_stream(name)


async def put(nc: NATS, stream: str, *ns: int) -> None:
    for n in ns:
        await nc.jetstream().publish(f"{stream}.x", str(n).encode())


async def test_batches_come_in_order_and_whole(nc: NATS, stream: str, raw: bool) -> None:
    await put(nc, stream, *range(10))
    batches = Reader(raw, nc, stream)
    assert await batches.fetch(4, 1.0) == [0, 1, 2, 3]
    assert await batches.fetch(100, 1.0) == [4, 5, 6, 7, 8, 9]
    started = time.monotonic()
    assert await batches.fetch(5, 0.3) == []  # nothing: waits its time, then empty
    assert 0.25 < time.monotonic() - started < 2.0
    await batches.close()


async def test_a_fetch_waiting_returns_what_arrives_with_what_follows(
    nc: NATS, stream: str, raw: bool
) -> None:
    batches = Reader(raw, nc, stream)
    waiting = asyncio.create_task(batches.fetch(10, 5.0))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await put(nc, stream, 1)
    got = await waiting
    assert got == [1]
    assert time.monotonic() - started < 1.0  # not the whole wait
    await put(nc, stream, 2, 3, 4)
    assert await batches.fetch(10, 1.0) == [2, 3, 4]
    await batches.close()


async def test_many_fetches_lose_and_repeat_nothing(nc: NATS, stream: str, raw: bool) -> None:
    batches = Reader(raw, nc, stream)
    writer = asyncio.create_task(put(nc, stream, *range(500)))
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while len(seen) < 500 and time.monotonic() < deadline:
        seen += await batches.fetch(7, 0.2)
    await writer
    assert seen == list(range(500))
    await batches.close()


async def test_a_consumer_that_does_not_exist_is_an_error_by_name(
    nc: NATS, stream: str, raw: bool
) -> None:
    batches = Reader(raw, nc, f"{stream}-gone")
    with pytest.raises(TransportError, match="status 503"):
        await batches.fetch(1, 0.2)
    await batches.close()


async def test_a_consumer_deleted_under_a_reader_is_an_error_by_name(
    nc: NATS, stream: str, raw: bool
) -> None:
    """Its pull requests then have nobody to answer them: an error the reader handles
    (the dispatcher retries with backoff, a tail starts again), not an empty batch."""
    batches = Reader(raw, nc, stream)
    assert await batches.fetch(1, 0.1) == []
    await nc.jetstream().delete_consumer(stream, "c")
    with pytest.raises(TransportError, match="status 503"):
        await batches.fetch(1, 0.2)
    await batches.close()
