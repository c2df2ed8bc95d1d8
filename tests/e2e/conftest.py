"""Every e2e test also checks the wire: each message written to a tenant log (and each
heartbeat still in a live stream) created during the test follows its published JSON
Schema (``schemas/json/``, :mod:`tests.wire`); events are the user's JSON and have none."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from nats.aio.client import Client as NATS

import eventstore
from eventstore.tail import read_to_end
from natchet.dev.embedded import NatsServer
from schemas.tenancy import SYSTEM_STREAM
from tests.wire import problems

CHECKED = ("natchet-", "live-")  # tenant logs and live streams (not the task work queues)


async def _stream_names(nc: NATS) -> set[str]:
    names: set[str] = set()
    while True:
        answer = await nc.request(
            "$JS.API.STREAM.NAMES", orjson.dumps({"offset": len(names)}), timeout=5
        )
        page = orjson.loads(answer.data)
        names.update(page.get("streams") or ())
        if not page.get("streams") or len(names) >= page.get("total", 0):
            return {n for n in names if n.startswith(CHECKED) and n != SYSTEM_STREAM}


async def _connect(server: NatsServer) -> NATS:
    return await eventstore.connect(eventstore.NatsOptions(server.url, name="schema-check"))


@pytest.fixture(autouse=True)
async def messages_follow_their_schemas(
    nats_server: NatsServer, request: pytest.FixtureRequest
) -> AsyncIterator[None]:
    """After the test: no message breaks its schema, or exactly as many as a test marked
    ``invalid_messages(n)`` wrote by hand."""
    marker = request.node.get_closest_marker("invalid_messages")
    expected = int(marker.args[0]) if marker else 0
    nc = await _connect(nats_server)
    try:
        before = await _stream_names(nc)
    finally:
        await nc.close()
    yield
    nc = await _connect(nats_server)
    bad: list[str] = []
    try:
        for stream in sorted(await _stream_names(nc) - before):
            async for record in read_to_end(nc, stream):
                found = problems(record.subject, record.data)
                if found:
                    bad.append(f"{stream} seq {record.seq} {record.subject}: {'; '.join(found)}")
    finally:
        await nc.close()
    assert len(bad) == expected, (
        f"{len(bad)} messages do not follow their schema ({expected} expected):\n"
        + "\n".join(bad[:20])
    )
