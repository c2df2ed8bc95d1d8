"""The sourcing nudges of a partitioned dispatch (issue 16): every partition's appenders
hear of a new leader of the log, once per election even with two nudges on one connection,
and only the nudge that may step the task queues down tries to."""

from __future__ import annotations

from typing import Any

import attrs
from nats.aio.client import Client as NATS

from eventstore.sourcing import SourcingNudge, new_leader


@attrs.frozen
class Advisory:
    data: bytes


async def test_two_nudges_on_one_connection_tell_its_appenders_once_an_election() -> None:
    conn = NATS()  # never connected: only the telling is exercised
    coordinator = SourcingNudge(conn, "acme")
    other = SourcingNudge(conn, "acme", step_down=False)
    before = new_leader(conn)
    first: Any = Advisory(b'{"id": "1"}')
    await coordinator._elected(first)
    after_first = new_leader(conn)  # what an append sent now waits on
    await other._elected(first)  # the same advisory, through the other subscription
    assert before.is_set() and not after_first.is_set()
    assert new_leader(conn) is after_first
    second: Any = Advisory(b'{"id": "2"}')
    await other._elected(second)  # the next election: told, by whichever hears it first
    await coordinator._elected(second)
    assert after_first.is_set() and not new_leader(conn).is_set()
    # Only the coordinator's watch wakes to step the task queues down.
    assert coordinator._wake.is_set() and not other._wake.is_set()
