"""``eventstore.rawparse.RawParser``: whatever way the wire is cut into reads, the messages
reach their handlers as nats-py's own parser hands them out, in the same order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.protocol.parser import Parser

from eventstore.rawparse import RawParser, install, uninstall

WIRE = (
    b"MSG a.b 7 $JS.ACK.s.c.1.1.1.1.0 3\r\nabc\r\n"
    b"MSG c 7 0\r\n\r\n"  # no reply, empty payload
    b"MSG other 9 rep 2\r\nhi\r\n"  # another subscription's
    b"MSG a.b 7 r 5\r\nhel\r\n\r\n"  # a payload holding CRLF
    b"HMSG h 7 rep 12 14\r\nNATS/1.0\r\n\r\nxy\r\n"  # with headers
    b"PING\r\n"
    b"HMSG _INBOX.x 7 16 16\r\nNATS/1.0 404\r\n\r\n\r\n"  # a status
    b"MSG a.b 7 $JS.ACK.s.c.1.2.2.1.0 1\r\nz\r\n"
    b"MSG a.b   7\t r2  2\r\nok\r\n"  # odd spacing
)


class Client:
    """What a parser calls on its client."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, ...]] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.got.append((sid, bytes(subject), bytes(reply), data, headers))

    async def _process_ping(self) -> None:
        self.got.append(("PING",))


def parse(parser_class: type[Parser], chunks: list[bytes]) -> list[tuple[Any, ...]]:
    client = Client()
    parser = Parser(client)
    if parser_class is RawParser:
        routes = {7: lambda s, r, d, h: client.got.append((7, s, r, d, h))}
        install(parser, routes)
        assert type(parser) is RawParser
    for chunk in chunks:
        asyncio.run(parser.parse(chunk))
    assert not parser.buf
    uninstall(parser)
    assert type(parser) is Parser
    return client.got


def test_the_whole_wire_at_once() -> None:
    assert parse(RawParser, [WIRE]) == parse(Parser, [WIRE])
    assert len(parse(RawParser, [WIRE])) == 9


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 40])
def test_the_wire_in_reads_of_any_size(size: int) -> None:
    chunks = [WIRE[i : i + size] for i in range(0, len(WIRE), size)]
    assert parse(RawParser, chunks) == parse(Parser, [WIRE])


def test_the_wire_cut_in_two_anywhere() -> None:
    expected = parse(Parser, [WIRE])
    for cut in range(1, len(WIRE)):
        assert parse(RawParser, [WIRE[:cut], WIRE[cut:]]) == expected, cut


def test_a_nats_py_without_the_internals_the_raw_reader_uses_is_not_supported() -> None:
    from eventstore import rawsub
    from eventstore.rawparse import supported

    assert supported(Parser(None))
    assert not supported(object())

    class Changed:  # a client whose per-message method or parser was renamed
        _ps = object()

        def _process_msg(self) -> None: ...

    assert not rawsub.supported(Changed())  # type: ignore[arg-type]
    assert not rawsub.supported(object())  # type: ignore[arg-type]
