"""A pull consumer's batches as records, read off the wire without nats-py's ``Msg``: the
reader of a rebuild (:func:`eventstore.read_to_end` with ``raw=True``).

The same requests and endings as :class:`~eventstore.batches.Batches`, over a raw
subscription (:mod:`eventstore.rawsub`): each delivery becomes its :class:`Record` and
the position its ack subject gives, in the parser's loop, and nothing else is made for it.
Header blocks are parsed by nats-py's own function, so a record's headers are the ones
``Msg.headers`` holds.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from nats.aio.client import Client as _Client
from nats.aio.subscription import Subscription

from eventstore.batches import PullBatches
from eventstore.errors import ReadError
from eventstore.rawsub import subscribe_raw, unsubscribe_raw
from eventstore.records import AckInfo, Record, parse_ack

_parse_header_lines = _Client._parse_header_lines  # what nats-py's headers are made with
_STATUS_LINE = len(b"NATS/1.0")  # a status follows, after a space: "NATS/1.0 404 ..."
_HEADERS = len(b"NATS/1.0\r\n")


class Delivered(NamedTuple):
    """A stored message as delivered: its record, and the delivery's ack subject, read
    in full only for the last message of a batch (:meth:`position`)."""

    record: Record
    consumer_seq: int  # -1: the reply was not a JetStream delivery's
    reply: bytes

    def position(self) -> AckInfo:
        """Everything the ack subject says (:class:`ReadError` if it is not one)."""
        try:
            info = parse_ack(self.reply.decode()) if self.consumer_seq >= 0 else None
        except ValueError:  # a token that is not a number
            info = None
        if info is None:
            raise ReadError(
                f"not a JetStream delivery: reply {self.reply!r} on {self.record.subject}"
            )
        return info


class Status(NamedTuple):
    """A status the server sent the inbox (it ends a request, or is a heartbeat)."""

    code: str
    description: str


def status_of(headers: bytes) -> Status | None:
    """The inline status a header block starts with (``NATS/1.0 404 No Messages``), if any."""
    if headers[_STATUS_LINE : _STATUS_LINE + 1] != b" ":
        return None
    line = headers[_STATUS_LINE + 1 :].split(b"\r\n", 1)[0]
    text = line.decode(errors="replace")
    return Status(text[:3].strip(), text[4:])


def delivery(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> Delivered:
    """A message's :class:`Delivered`, from its parts as the wire holds them. Its stream
    sequence, consumer sequence and time are read off the ack subject as
    :func:`~eventstore.records.parse_ack` reads them, in its two forms (``$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``, or with a domain
    and an account hash after ``ACK`` and a token at the end)."""
    hdrs = None if headers is None else (_parse_header_lines(headers[_HEADERS:]) or None)
    t = reply.split(b".")
    n = len(t)
    at = 5 if n == 9 else 7 if n >= 11 else 0
    if at and t[0] == b"$JS" and t[1] == b"ACK":
        try:
            seq, cseq, stored = int(t[at]), int(t[at + 1]), int(t[at + 2])
            return Delivered(Record(seq, subject.decode(), data, hdrs, stored), cseq, reply)
        except ValueError:  # a token that is not a number
            pass
    return Delivered(Record(0, subject.decode(), data, hdrs, None), -1, reply)


class RawBatches(PullBatches[Delivered | Status]):
    """Batches of :class:`Delivered`; statuses end requests and never reach the caller."""

    def _deliver(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        item: Delivered | Status | None = None
        if headers is not None:
            item = status_of(headers)
        if item is None:
            try:
                item = delivery(subject, reply, data, headers)
            except Exception as exc:  # not to be raised in nats-py's parser: at the fetch
                item = Status("bad", f"unreadable message on {subject!r}: {exc}")
        self._queue.append(item)
        self._arrived.set()

    async def _subscribe(self, inbox: str) -> Subscription:
        return await subscribe_raw(self.conn, inbox, self._deliver)

    async def _unsubscribe(self, sub: Subscription) -> None:
        await unsubscribe_raw(self.conn, sub)

    def _status(self, item: Delivered | Status) -> tuple[str, str] | None:
        return (item.code, item.description) if type(item) is Status else None

    def _info(self, item: Delivered | Status) -> AckInfo:
        assert type(item) is Delivered  # statuses are never handed out
        return item.position()

    async def fetch_deliveries(self, n: int, wait_s: float) -> list[Delivered]:
        """:meth:`fetch`, typed: statuses never reach the caller."""
        return cast(list[Delivered], await self.fetch(n, wait_s))
