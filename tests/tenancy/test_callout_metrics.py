"""The auth callout's answers, counted on ``/metrics`` (issue 11): a valid token of tenant A
rewritten to claim tenant B is refused, and counted as a refusal for B (``wrong_tenant``);
A's own connects are counted as accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest

import eventstore
from eventstore import ConnectError
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.health import HealthServer
from schemas.tenancy import parse_token
from tests.conftest import eventually
from tests.support import scrape, total
from tests.tenancy.conftest import client_options, new_tenant

pytestmark = pytest.mark.timeout(120)

DECISIONS = "natchet_callout_decisions_total"


@pytest.fixture
async def metrics_url(tenancy_engine: Engine) -> AsyncIterator[str]:
    """The session engine's metrics, served for this test on a free port."""
    server = HealthServer(tenancy_engine.metrics, tenancy_engine.probe, "127.0.0.1", 0)
    await server.open()
    async with server:
        yield server.url


async def test_a_token_of_tenant_a_claiming_tenant_b_is_refused_and_counted(
    tenancy_engine: Engine, auth_server: NatsServer, metrics_url: str
) -> None:
    a, a_token = await new_tenant(tenancy_engine, auth_server, "ma")
    b, _b_token = await new_tenant(tenancy_engine, auth_server, "mb")
    before = await scrape(metrics_url)
    claimed_b = attrs.evolve(parse_token(a_token), tenant=b).encode()
    with pytest.raises(ConnectError, match="refused the token"):
        await eventstore.connect(client_options(auth_server, b, claimed_b))
    nc = await eventstore.connect(client_options(auth_server, a, a_token))
    await nc.close()

    async def counted() -> bool:
        after = await scrape(metrics_url)

        def grew(**labels: str) -> float:
            return total(after, DECISIONS, **labels) - total(before, DECISIONS, **labels)

        assert grew(tenant=b, outcome="refused", reason="wrong_tenant") == 1
        assert grew(tenant=a, outcome="refused") == 0
        assert grew(tenant=a, outcome="accepted", reason="token") >= 1
        return True

    await eventually(counted)


async def test_refusals_of_unknown_tenants_are_not_labelled_with_them(
    tenancy_engine: Engine, auth_server: NatsServer, metrics_url: str
) -> None:
    """A name a client made up never becomes a label (cardinality stays bounded)."""
    _a, a_token = await new_tenant(tenancy_engine, auth_server, "mc")
    made_up = attrs.evolve(parse_token(a_token), tenant="nosuchtenant").encode()
    with pytest.raises(ConnectError):
        await eventstore.connect(client_options(auth_server, "nosuchtenant", made_up))

    async def counted() -> bool:
        samples = await scrape(metrics_url)
        assert total(samples, DECISIONS, tenant="nosuchtenant") == 0
        assert total(samples, DECISIONS, tenant="", reason="wrong_tenant") >= 1
        return True

    await eventually(counted)
