"""Stream replicas on a 3-node cluster: every stream provisioning creates has the copies
asked for, as the server stored them; more are added to an existing stream, never fewer."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client as NATS

from bench.chaos_cluster import replicas, tenant_streams
from eventstore import StreamLimits, ensure_tenant_stream
from eventstore.connection import server_urls
from eventstore.errors import ConnectError
from natchet.config import EngineSettings
from schemas.errors import ConfigError


def new_tenant() -> str:
    return f"r{uuid.uuid4().hex[:12]}"


async def test_every_tenant_stream_has_three_replicas_as_stored(cluster_nc: NATS) -> None:
    tenant = new_tenant()
    await ensure_tenant_stream(cluster_nc, tenant, StreamLimits(replicas=3))
    for stream in tenant_streams(tenant):
        stored = await replicas(cluster_nc, stream)
        assert stored.num_replicas == 3, stream
        assert stored.leader, stream
        assert len(stored.peers) == 2, (stream, stored.peers)


async def test_an_existing_stream_is_scaled_up_never_down(cluster_nc: NATS) -> None:
    tenant = new_tenant()
    await ensure_tenant_stream(cluster_nc, tenant)
    assert {(await replicas(cluster_nc, s)).num_replicas for s in tenant_streams(tenant)} == {1}
    await ensure_tenant_stream(cluster_nc, tenant, StreamLimits(replicas=3))
    assert {(await replicas(cluster_nc, s)).num_replicas for s in tenant_streams(tenant)} == {3}
    # An engine started without the setting takes no copy away; a new quota keeps them.
    await ensure_tenant_stream(cluster_nc, tenant, StreamLimits(max_bytes=1 << 20))
    info = await cluster_nc.jetstream().stream_info(f"natchet-{tenant}")
    assert (info.config.num_replicas, info.config.max_bytes) == (3, 1 << 20)
    assert {(await replicas(cluster_nc, s)).num_replicas for s in tenant_streams(tenant)} == {3}


def test_replicas_out_of_range_is_one_clear_line() -> None:
    env = {"NATCHET_NATS_URL": "nats://x:4222", "NATCHET_DATABASE_URL": "postgresql://x/y"}
    with pytest.raises(ConfigError, match=r"streams have 1 to 5 replicas, not 7$"):
        EngineSettings.resolve(env=env | {"NATCHET_STREAM_REPLICAS": "7"})
    with pytest.raises(ConfigError, match=r"not a number of replicas: 'three'"):
        EngineSettings.resolve(env=env | {"NATCHET_STREAM_REPLICAS": "three"})
    assert EngineSettings.resolve(env=env).stream_replicas == 1
    assert EngineSettings.resolve(env=env, stream_replicas=3).stream_replicas == 3


def test_a_cluster_address_is_every_node_comma_separated() -> None:
    assert server_urls("10.0.0.1:4222, nats://10.0.0.2:4222,tls://h:1") == [
        "nats://10.0.0.1:4222",
        "nats://10.0.0.2:4222",
        "tls://h:1",
    ]
    with pytest.raises(ConnectError, match="no NATS address"):
        server_urls(" , ")
