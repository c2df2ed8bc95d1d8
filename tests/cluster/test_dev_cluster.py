"""``natchet dev --cluster 3`` (``dev_engine(cluster=3)``): three nodes in operator mode,
the auth callout answering on every node, every stream with three replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventstore
from bench.chaos_cluster import replicas, tenant_streams
from natchet.dev.serve import dev_engine
from natchet.tenancy.serverconf import NatsAuth
from schemas.errors import ConfigError
from schemas.tenancy import SYSTEM_STREAM, inbox_prefix


async def test_dev_cluster_serves_tenants_on_every_node(tmp_path: Path, dsn: str) -> None:
    async with dev_engine(
        tmp_path / "dev",
        nats_url=None,
        database_url=dsn,
        tenant="dev",
        env_file=None,
        cluster=3,
    ) as dev:
        nodes = dev.env["HATCHET_CLIENT_HOST_PORT"].split(",")
        assert len(nodes) == 3
        assert dev.env["NATCHET_NATS_URL"].count("nats://") == 3
        token = dev.env["HATCHET_CLIENT_TOKEN"]
        for node in nodes:  # the callout answers a token on every node
            options = eventstore.NatsOptions(node, token=token, inbox_prefix=inbox_prefix("dev"))
            nc = await eventstore.connect(options)
            assert nc.is_connected
            await nc.close()
        auth_file = dev.settings.nats_auth_file
        assert auth_file is not None
        auth = NatsAuth.load(Path(auth_file))
        log_nc = await eventstore.connect(auth.options(dev.settings.nats_url, "t", "log:dev"))
        engine_nc = await eventstore.connect(auth.options(dev.settings.nats_url, "t", "engine"))
        try:
            for stream in tenant_streams("dev"):
                assert (await replicas(log_nc, stream)).num_replicas == 3, stream
            assert (await replicas(engine_nc, SYSTEM_STREAM)).num_replicas == 3
        finally:
            await log_nc.close()
            await engine_nc.close()


async def test_cluster_with_a_given_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--cluster starts an embedded NATS cluster"):
        async with dev_engine(
            tmp_path / "dev",
            nats_url="nats://127.0.0.1:4222",
            database_url="postgresql://x/y",
            tenant="dev",
            env_file=None,
            cluster=3,
        ):
            pass
