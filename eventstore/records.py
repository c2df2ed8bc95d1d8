"""One stored message as readers see it, and where a stream ends."""

from __future__ import annotations

import datetime as dt

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
    time: dt.datetime | None = None  # when the stream stored it


def to_record(msg: Msg) -> Record:
    meta = msg.metadata
    return Record(meta.sequence.stream, msg.subject, msg.data, msg.headers, meta.timestamp)


async def stream_last_seq(nc: NATS, stream: str) -> int:
    """The stream's last sequence (0: empty)."""
    try:
        info = await nc.jetstream().stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise ReadError(f"stream {stream} does not exist") from None
    except nats.errors.Error as exc:
        raise TransportError(f"cannot read {stream}: {exc}") from None
    return int(info.state.last_seq)
