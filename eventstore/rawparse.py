"""A shorter way through nats-py's parser for raw subscriptions' plain messages
(:mod:`eventstore.rawsub`).

nats-py's ``Parser.parse`` reads every frame with regular expressions, copies its payload
twice and awaits the client's ``_process_msg`` for it: the largest single function of a
rebuild (12% of its samples, docs/benchmarks.md, issue 10). While a connection has raw
subscriptions its parser is a :class:`RawParser`: each ``MSG`` frame (a message without
headers) at the head of the buffer, for a raw subscription, whole, is cut off the buffer
and handed straight to the subscription's handler; anything else (another subscription's
message, one with headers, a status, ``PING``, ``INFO``, ``-ERR``, a frame that is not
``MSG`` ...) and everything after it in the buffer goes through nats-py's own ``parse``, as
before. An incomplete raw frame waits in the buffer for the rest, as nats-py's own would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

_MSG = b"MSG "
_CRLF = b"\r\n"


class RawParser(Parser):
    """nats-py's parser, with raw subscriptions' plain messages taken first."""

    # The raw handlers by sid: ``rawsub``'s router's, set when the class is swapped in.
    routes: dict[int, Callable[[bytes, bytes, bytes, bytes | None], None]]

    async def parse(self, data: bytes = b"") -> None:
        buf: bytearray = self.buf
        buf.extend(data)
        routes = self.routes
        while buf and self.state == AWAITING_CONTROL_LINE and buf[:4] == _MSG:
            end = buf.find(_CRLF)
            if end < 0:
                return  # the control line is not all there yet
            args = bytes(buf[4:end]).split()
            if len(args) == 4:
                subject, sid, reply, size = args
            elif len(args) == 3:
                subject, sid, size = args
                reply = b""
            else:
                break  # malformed: nats-py's parser says so
            try:
                handler = routes.get(int(sid))
                start = end + 2
                stop = start + int(size)
            except ValueError:
                break
            if handler is None:
                break  # another subscription's: nats-py's way
            if len(buf) < stop + 2:
                return  # the payload is not all there yet
            payload = bytes(buf[start:stop])
            del buf[: stop + 2]
            handler(subject, reply, payload, None)
        if buf:
            await Parser.parse(self)


def supported(parser: Any) -> bool:
    """Whether ``parser`` is nats-py's (or already ours), with the buffer and state read."""
    return (
        isinstance(parser, Parser)
        and isinstance(getattr(parser, "buf", None), bytearray)
        and hasattr(parser, "state")
    )


def install(
    parser: Any, routes: dict[int, Callable[[bytes, bytes, bytes, bytes | None], None]]
) -> None:
    """Make a connection's parser a :class:`RawParser` reading with ``routes``."""
    if type(parser) is Parser:
        parser.__class__ = RawParser
    if isinstance(parser, RawParser):
        parser.routes = routes


def uninstall(parser: Any) -> None:
    """Give a connection's parser back nats-py's own class."""
    if type(parser) is RawParser:
        parser.__class__ = Parser  # type: ignore[assignment]
