"""``ack_info`` reads a delivery's ack subject as nats-py's ``msg.metadata`` does."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from eventstore import ReadError
from eventstore.messages import Delivery
from eventstore.records import Record, ack_info, to_record

V1 = "$JS.ACK.natchet-t.dispatcher.2.123456.123450.1764612345123456789.42"
V2 = "$JS.ACK.hub.ACCHASH.natchet-t.dispatcher.2.123456.123450.1764612345123456789.42.x9"


@pytest.mark.parametrize("reply", [V1, V2, V2.rsplit(".", 1)[0]])
def test_reads_what_nats_py_reads(reply: str) -> None:
    msg = Msg(None, subject="t.ns.events.x", reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata
    info = ack_info(msg)
    assert info.stream_seq == meta.sequence.stream == 123456
    assert info.consumer_seq == meta.sequence.consumer == 123450
    assert info.delivered == meta.num_delivered == 2
    assert info.pending == meta.num_pending == 42
    assert info.time == meta.timestamp


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.abc.1", "$JS.ACK.too.short", "$JS.API.a.b.c.d.e.f.g"]
)
def test_a_message_not_from_a_consumer_is_refused_by_name(reply: str) -> None:
    msg = Msg(None, subject="t.ns.events.x", reply=reply)  # type: ignore[arg-type]
    with pytest.raises(ReadError, match="not a JetStream delivery"):
        ack_info(msg)


def test_a_record_and_a_delivery_tell_the_stored_time_when_asked() -> None:
    """Both keep JetStream's nanoseconds and make the datetime only when asked."""
    msg = Msg(None, subject="t.ns.events.x", reply=V1, data=b"{}")  # type: ignore[arg-type]
    record, delivery = to_record(msg), Delivery.of(msg)
    assert record.stored == delivery.stored == 1764612345123456789
    assert record.time == delivery.time == msg.metadata.timestamp
    assert Record(1, "s", b"", None, record.time).time == record.time
    assert Record(1, "s", b"").time is None
