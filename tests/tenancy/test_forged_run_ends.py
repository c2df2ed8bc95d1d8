"""A run's end is the dispatcher's to say. Workers trust the run ends they hear (to cancel
running steps, and to skip asking the log whether a fresh task's run is over:
``worker.ended``), so no tenant client may publish one, in its own tenant or another's."""

from __future__ import annotations

import pytest

import eventstore
from eventstore import Message, subscribe
from natchet.dev.embedded import NatsServer
from schemas import Scope
from tests.tenancy.conftest import Attacker, client_options
from tests.tenancy.test_attacks import a_still_works, violation

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("whose", ["own", "another"])
async def test_a_forged_run_end_is_refused_and_reaches_no_worker(
    attacker: Attacker, auth_server: NatsServer, whose: str
) -> None:
    # A worker of the attacker's own tenant, listening as workers do.
    options = client_options(auth_server, attacker.tenant, attacker.token)
    listener = await eventstore.connect(options)
    heard: list[str] = []

    async def hear(msg: Message) -> None:
        heard.append(msg.subject)

    scope = Scope(attacker.tenant if whose == "own" else "victim0000")
    sub = await subscribe(listener, f"{Scope(attacker.tenant).prefix}.runs.*.finished", hear)
    await listener.flush()
    subject = scope.run("r-forged", "finished")
    await attacker.nc.publish(subject, b'{"run_id": "r-forged", "status": "CANCELLED"}')
    await violation(attacker, f'publish to "{subject}"')
    await listener.flush()  # a round trip after the refusal: nothing was on its way
    assert heard == []
    await sub.unsubscribe()
    await listener.close()
    await a_still_works(attacker)
