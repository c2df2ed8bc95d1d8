"""Plain NATS messaging through the door: publish, subscribe, and the messages handlers get.

Nothing outside ``eventstore`` holds a nats-py object but the connection (``Connection``,
passed around opaquely): handlers receive :class:`Message`, stored messages handed out with
an ack come as :class:`Delivery`, and every nats-py error becomes an ``eventstore`` error
here, once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable

import attrs
import nats.errors
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as _Subscription

from eventstore.errors import TransportError
from eventstore.records import ack_info

__all__ = [
    "Connection",
    "Delivery",
    "Message",
    "Subscription",
    "ask",
    "close",
    "publish",
    "subscribe",
]


@attrs.frozen
class Message:
    """A message a subscription received."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    reply: str
    _msg: Msg = attrs.field(repr=False)

    async def respond(self, data: bytes) -> None:
        try:
            await self._msg.respond(data)
        except nats.errors.Error as exc:
            raise TransportError(f"could not answer on {self.reply}: {exc}") from None


Handler = Callable[[Message], Awaitable[None]]


@attrs.frozen
class Subscription:
    _sub: _Subscription = attrs.field(repr=False)

    async def unsubscribe(self) -> None:
        """Stop receiving; a connection already closed is no error."""
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()


async def subscribe(conn: Connection, subject: str, handler: Handler) -> Subscription:
    """Call ``handler`` with every message on ``subject`` (one at a time)."""

    async def deliver(msg: Msg) -> None:
        await handler(Message(msg.subject, msg.data, msg.headers, msg.reply, msg))

    try:
        return Subscription(await conn.subscribe(subject, cb=deliver))
    except nats.errors.Error as exc:
        raise TransportError(f"could not subscribe to {subject}: {exc}") from None


async def publish(
    conn: Connection,
    subject: str,
    data: bytes,
    *,
    reply: str = "",
    headers: dict[str, str] | None = None,
) -> None:
    """Publish without waiting for anyone (core NATS: not stored unless a stream captures
    ``subject``, and then without an acknowledgement; use ``append`` for that)."""
    try:
        await conn.publish(subject, data, reply=reply, headers=headers)
    except nats.errors.Error as exc:
        raise TransportError(f"could not publish to {subject}: {exc}") from None


CLOSE_ERRORS = (nats.errors.Error, OSError, RuntimeError)


async def close(conn: Connection, *, drain: bool = True) -> None:
    """Close a connection (draining it first: what was sent is flushed). Idempotent; a
    drain that fails (the connection is down) still ends in a close."""
    # nats-py flushes its socket as it closes: a lost one says ConnectionReset (OSError), or,
    # under uvloop, RuntimeError (the transport's handle is closed: a server that kicked the
    # client, a revoked token).
    if drain and not conn.is_closed:
        with contextlib.suppress(*CLOSE_ERRORS):
            await conn.drain()
    if not conn.is_closed:
        with contextlib.suppress(*CLOSE_ERRORS):
            await conn.close()


@attrs.frozen
class Delivery:
    """A stored message handed out by a consumer, to be acknowledged by whoever got it."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    seq: int  # its stream sequence
    delivered: int  # how many times the consumer has handed it out (1: the first)
    stored: int | None  # when the stream stored it, in nanoseconds since the epoch (``time``)
    reply: str  # its ack subject
    pending: int  # how many more the consumer had waiting when it handed this out
    _msg: Msg = attrs.field(repr=False)

    @property
    def time(self) -> dt.datetime | None:
        """When the stream stored it (made a datetime only when asked: few ask)."""
        return None if self.stored is None else dt.datetime.fromtimestamp(self.stored / 1e9, dt.UTC)

    @classmethod
    def of(cls, msg: Msg) -> Delivery:
        info = ack_info(msg)
        return cls(
            msg.subject,
            msg.data,
            msg.headers,
            info.stream_seq,
            info.delivered,
            info.time_ns,
            msg.reply,
            info.pending,
            msg,
        )

    async def _do(self, what: str, act: Callable[[], Awaitable[object]]) -> None:
        try:
            await act()
        except nats.errors.Error as exc:
            raise TransportError(f"could not {what} #{self.seq} ({self.subject}): {exc}") from None

    async def ack(self) -> None:
        await self._do("ack", self._msg.ack)

    async def ack_sync(self, timeout_s: float = 5.0) -> None:
        """Ack, and wait until the server confirms it (an ack can be lost otherwise)."""
        await self._do("ack", lambda: self._msg.ack_sync(timeout=timeout_s))

    async def nak(self, delay_s: float | None = None) -> None:
        """Hand it back: redelivered at once, or after ``delay_s``."""
        await self._do("nak", lambda: self._msg.nak(delay=delay_s))

    async def in_progress(self) -> None:
        """Still working on it: the consumer's ack wait starts again."""
        await self._do("extend", self._msg.in_progress)

    async def term(self) -> None:
        """Never deliver it again (it cannot be processed)."""
        await self._do("terminate", self._msg.term)


async def ask(conn: Connection, subject: str, data: bytes, *, timeout_s: float = 5.0) -> Message:
    """A request and its first answer. ``PermissionDeniedError`` at once when the broker
    refuses the subject; ``TransportError`` when nobody answers (in time)."""
    from eventstore.connection import request

    try:
        msg = await request(conn, subject, data, timeout_s=timeout_s)
    except nats.errors.NoRespondersError:
        raise TransportError(f"nobody answers on {subject}") from None
    except nats.errors.TimeoutError:
        raise TransportError(f"no answer on {subject} within {timeout_s}s") from None
    except nats.errors.Error as exc:
        raise TransportError(f"request on {subject} failed: {exc}") from None
    return Message(msg.subject, msg.data, msg.headers, msg.reply, msg)
