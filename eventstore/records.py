"""One stored message as readers see it, and where a stream ends."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from eventstore.errors import ReadError, TransportError


@attrs.frozen
class Record:
    """One stored message: where it sits in the stream, and what it says."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    # When the stream stored it: a datetime, or JetStream's nanoseconds since the epoch as a
    # delivery carries them, made a datetime only when asked (``time``). Most readers never
    # ask, and the conversion was 5% of a rebuild (bench/rebuild.py --profile).
    stored: dt.datetime | int | None = None

    @property
    def time(self) -> dt.datetime | None:
        """When the stream stored it."""
        stored = self.stored
        if isinstance(stored, int):
            return dt.datetime.fromtimestamp(stored / 1e9, dt.UTC)
        return stored


class AckInfo(NamedTuple):
    """What a JetStream delivery's ack subject says about it."""

    stream_seq: int
    consumer_seq: int
    delivered: int  # how many times it was handed out (1: the first)
    time_ns: int  # when the stream stored it
    pending: int  # how many more the consumer had waiting

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time_ns / 1e9, dt.UTC)


def ack_info(msg: Msg) -> AckInfo:
    """The delivery's position, read off its ack subject: ``$JS.ACK.<stream>.<consumer>.
    <delivered>.<stream seq>.<consumer seq>.<time>.<pending>``, or the newer form with a
    domain and an account hash after ``ACK`` (and a token at the end). What nats-py's
    ``msg.metadata`` reads, at a fifth of its cost: it is read for every message the
    dispatcher and the projector get (issue 9's profile: 8% of the projector)."""
    info = parse_ack(msg.reply or "")
    if info is None:
        raise ReadError(f"not a JetStream delivery: reply {msg.reply!r} on {msg.subject}")
    return info


def parse_ack(reply: str) -> AckInfo | None:
    """:func:`ack_info` of a reply subject; ``None`` if it is not a JetStream delivery's."""
    t = reply.split(".")
    if len(t) == 9 and t[0] == "$JS" and t[1] == "ACK":
        return AckInfo(int(t[5]), int(t[6]), int(t[4]), int(t[7]), int(t[8]))
    if len(t) >= 11 and t[0] == "$JS" and t[1] == "ACK":
        return AckInfo(int(t[7]), int(t[8]), int(t[6]), int(t[9]), int(t[10]))
    return None


def to_record(msg: Msg, info: AckInfo | None = None) -> Record:
    if info is None:
        info = ack_info(msg)
    return Record(info.stream_seq, msg.subject, msg.data, msg.headers, info.time_ns)


async def stream_last_seq(nc: NATS, stream: str) -> int:
    """The stream's last sequence (0: empty)."""
    try:
        info = await nc.jetstream().stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise ReadError(f"stream {stream} does not exist") from None
    except nats.errors.Error as exc:
        raise TransportError(f"cannot read {stream}: {exc}") from None
    return int(info.state.last_seq)
