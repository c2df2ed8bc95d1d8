"""The raw reader (``read_to_end(raw=True)``, ``RawBatches``, ``rawsub``): the same records
as the reader over nats-py's ``Msg``, on a real JetStream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from eventstore import ReadError, read_to_end
from eventstore.rawbatches import Delivered, RawBatches, Status, delivery, status_of
from eventstore.records import Record, parse_ack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stream(nc: NATS) -> AsyncIterator[str]:
    name = f"r{uuid.uuid4().hex[:10]}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.NONE))
    yield name
    await js.delete_stream(name)


async def put(nc: NATS, stream: str, *ns: int) -> None:
    for n in ns:
        await nc.jetstream().publish(f"{stream}.x", str(n).encode())


def bodies(got: list[Delivered]) -> list[int]:
    return [int(d.record.data) for d in got]


async def test_the_raw_read_gives_the_records_the_msg_read_gives(nc: NATS, stream: str) -> None:
    js = nc.jetstream()
    await js.publish(f"{stream}.a.b", b'{"n": 1}')
    await js.publish(f"{stream}.e", b"", headers={"Nats-Msg-Id": "m1"})  # empty body
    await js.publish(f"{stream}.e", b"not json \xff", headers={"X-A": "1", "x-b": " two "})
    await js.publish(
        f"{stream}.e", b"{}", headers={"Natchet-Meta-Who": "caf\u00e9 \u2603", "Empty": ""}
    )
    await js.publish(f"{stream}.big", b"x" * 200_000)
    for n in range(300):  # several batches
        await js.publish(f"{stream}.n.{n % 7}", str(n).encode(), headers={"N": str(n)})
    end = 305
    kwargs = {"until_seq": end, "batch_size": 64}
    by_msg = [r async for r in read_to_end(nc, stream, **kwargs)]  # type: ignore[arg-type]
    raw = [r async for r in read_to_end(nc, stream, raw=True, **kwargs)]  # type: ignore[arg-type]
    assert len(raw) == end
    assert raw == by_msg
    assert [r.seq for r in raw] == list(range(1, end + 1))
    assert raw[1].data == b"" and raw[1].headers == {"Nats-Msg-Id": "m1"}
    assert raw[2].headers == {"X-A": "1", "x-b": "two"}
    assert raw[3].headers is not None and raw[3].headers["Natchet-Meta-Who"] == "café ☃"
    assert raw[0].headers is None and raw[0].time is not None
    assert raw[10].time == by_msg[10].time
    # A filtered read keeps the same ones.
    subjects = [f"{stream}.e", f"{stream}.n.3"]
    filtered = [r async for r in read_to_end(nc, stream, subjects, raw=True, until_seq=end)]
    assert filtered == [r async for r in read_to_end(nc, stream, subjects, until_seq=end)]


async def test_other_subscriptions_of_the_connection_are_untouched(nc: NATS, stream: str) -> None:
    """While a raw subscription is open its connection's other subscriptions get their
    ``Msg`` as before; after the last one closes the connection is as it was."""
    got: list[Msg] = []

    async def keep(msg: Msg) -> None:
        got.append(msg)

    plain = await nc.subscribe(f"plain.{stream}", cb=keep)
    await put(nc, stream, 1, 2)
    batches = RawBatches(nc, stream, "c")
    assert bodies(await batches.fetch_deliveries(1, 1.0)) == [1]
    assert "_process_msg" in vars(nc)
    await nc.publish(f"plain.{stream}", b"hi", headers={"H": "v"})
    await nc.flush()
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.02)
    assert [(m.data, m.headers) for m in got] == [(b"hi", {"H": "v"})]
    await batches.close()
    assert "_process_msg" not in vars(nc)
    await plain.unsubscribe()


def test_statuses_and_odd_replies() -> None:
    assert status_of(b"NATS/1.0 404 No Messages\r\n\r\n") == Status("404", "No Messages")
    assert status_of(b"NATS/1.0 408\r\n\r\n") == Status("408", "")
    assert status_of(b"NATS/1.0\r\nA: b\r\n\r\n") is None
    ok = delivery(b"s.x", b"$JS.ACK.s.c.1.7.3.1764612345123456789.0", b"{}", None)
    assert ok.record == Record(7, "s.x", b"{}", None, 1764612345123456789)
    assert ok.consumer_seq == ok.position().consumer_seq == 3
    assert ok.position() == parse_ack(ok.reply.decode())
    v2 = b"$JS.ACK.hub.ACCHASH.s.c.2.9.4.1764612345123456789.0.x9"
    assert delivery(b"s.x", v2, b"", None)[:2] == (
        Record(9, "s.x", b"", None, 1764612345123456789),
        4,
    )
    for reply in (b"", b"_INBOX.x", b"$JS.ACK.s.c.1.x.3.1.0"):
        with pytest.raises(ReadError, match="not a JetStream delivery"):
            delivery(b"s.x", reply, b"", None).position()
