"""A NATS cluster of three nodes (JetStream on each) for the tests that want one: the rest
of the suite keeps the one-server ``nats_server`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from nats.aio.client import Client as NATS

import eventstore
from natchet.dev.cluster import NatsCluster


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats-cluster"), 3) as cluster:
        yield cluster


@pytest.fixture
async def cluster_nc(nats_cluster: NatsCluster) -> AsyncIterator[NATS]:
    """A connection given every node's URL."""
    client = await eventstore.connect(eventstore.NatsOptions(nats_cluster.url, name="test"))
    yield client
    await client.close()
