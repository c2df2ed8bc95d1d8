"""NATS with TLS from a generated local CA: the client's HATCHET_CLIENT_TLS_* settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import eventstore
from eventstore import ConnectError
from natchet.dev.embedded import NatsServer
from natchet.tenancy.serverconf import NatsAuth, write_server_files
from natchet.tenancy.tlsgen import generate_tls
from worker import ClientSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, NatsAuth]]:
    directory = tmp_path_factory.mktemp("nats-tls")
    auth = NatsAuth.generate(generate_tls(directory / "tls", verify_clients=True))
    config = write_server_files(directory, auth)
    with NatsServer(directory / "store", config_file=config) as server:
        yield server, auth


def engine_user(auth: NatsAuth, settings: ClientSettings) -> eventstore.NatsOptions:
    """The client's TLS settings, with the engine's credentials (no callout needed)."""
    engine = auth.options(settings.nats_url, "tls-test", "engine")
    return attrs.evolve(settings.nats_options("tls-test"), token=None, creds=engine.creds)


async def test_mtls_connects_with_the_generated_ca(tls_server: tuple[NatsServer, NatsAuth]) -> None:
    server, auth = tls_server
    assert auth.tls is not None
    settings = ClientSettings.from_env(
        {
            "HATCHET_CLIENT_HOST_PORT": f"tls://127.0.0.1:{server.port}",
            "HATCHET_CLIENT_TENANT_ID": "dev",
            "HATCHET_CLIENT_TLS_STRATEGY": "mtls",
            "HATCHET_CLIENT_TLS_ROOT_CA_FILE": auth.tls.ca,
            "HATCHET_CLIENT_TLS_CERT_FILE": auth.tls.client_cert,
            "HATCHET_CLIENT_TLS_KEY_FILE": auth.tls.client_key,
            "HATCHET_CLIENT_TLS_SERVER_NAME": "localhost",
        }
    )
    nc = await eventstore.connect(engine_user(auth, settings))
    assert nc.is_connected and nc._server_info.get("tls_required")
    await nc.close()


async def test_tls_without_the_ca_is_refused(tls_server: tuple[NatsServer, NatsAuth]) -> None:
    server, auth = tls_server
    assert auth.tls is not None
    settings = ClientSettings.from_env(
        {
            "HATCHET_CLIENT_HOST_PORT": f"tls://127.0.0.1:{server.port}",
            "HATCHET_CLIENT_TENANT_ID": "dev",
            "HATCHET_CLIENT_TLS_STRATEGY": "tls",  # system roots only: the dev CA is unknown
        }
    )
    with pytest.raises(ConnectError):
        await eventstore.connect(attrs.evolve(engine_user(auth, settings), connect_timeout_s=2))


async def test_mtls_without_a_client_certificate_is_refused(
    tls_server: tuple[NatsServer, NatsAuth], tmp_path: Path
) -> None:
    server, auth = tls_server
    assert auth.tls is not None
    settings = ClientSettings.from_env(
        {
            "HATCHET_CLIENT_HOST_PORT": f"tls://127.0.0.1:{server.port}",
            "HATCHET_CLIENT_TENANT_ID": "dev",
            "HATCHET_CLIENT_TLS_STRATEGY": "tls",
            "HATCHET_CLIENT_TLS_ROOT_CA_FILE": auth.tls.ca,
        }
    )
    with pytest.raises(ConnectError):
        await eventstore.connect(attrs.evolve(engine_user(auth, settings), connect_timeout_s=2))
