"""Connecting with no, malformed, revoked or expired tokens; revocation of live connections;
what a worker derives from its token alone."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

import eventstore
from eventstore import Append, ConfigError, ConnectError, append
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.tenancy import admin
from natchet.tenancy.serverconf import AUTH_FILE
from schemas import Scope
from schemas.tenancy import parse_token
from tests.conftest import eventually
from tests.support import http_get
from tests.tenancy.conftest import client_options, log_nc, new_tenant
from worker import ClientSettings

pytestmark = pytest.mark.timeout(120)
REFUSAL_S = 3.0  # a refused connect answers at once, never at a timeout


async def refused(server: NatsServer, tenant: str, token: str | None) -> str:
    start = time.monotonic()
    with pytest.raises(ConnectError) as info:
        await eventstore.connect(client_options(server, tenant, token))
    assert time.monotonic() - start < REFUSAL_S
    return str(info.value)


async def test_connect_without_token_is_refused(auth_server: NatsServer, admin_nc: NATS) -> None:
    message = await refused(auth_server, "dev", None)
    assert "Authorization Violation" in message and "HATCHET_CLIENT_TOKEN" in message


async def test_connect_with_malformed_token_is_refused(
    auth_server: NatsServer, admin_nc: NATS
) -> None:
    for token in ("not-a-token", "nct_e30.short", "nct_!!!.aaaaaaaaaaaaaaaaaaaaaaaa"):
        message = await refused(auth_server, "dev", token)
        assert "refused the token" in message
    with pytest.raises(ConfigError, match="malformed token"):
        ClientSettings.from_env({"HATCHET_CLIENT_TOKEN": "nct_garbage"})


async def test_connect_with_forged_secret_is_refused(
    tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    tenant, token = await new_tenant(tenancy_engine, auth_server, "f")
    forged = token.rsplit(".", 1)[0] + ".x" + token.rsplit(".", 1)[1][1:]
    await refused(auth_server, tenant, forged)


async def test_connect_with_revoked_token_is_refused(
    tenancy_engine: Engine, auth_server: NatsServer, admin_nc: NATS
) -> None:
    tenant, token = await new_tenant(tenancy_engine, auth_server, "r")
    nc = await eventstore.connect(client_options(auth_server, tenant, token))
    await nc.close()
    await admin.revoke_token(admin_nc, parse_token(token).token_id)
    message = await refused(auth_server, tenant, token)
    assert "revoked" in message


async def test_connect_with_expired_token_is_refused(
    tenancy_engine: Engine, auth_server: NatsServer, admin_nc: NATS
) -> None:
    tenant, _ = await new_tenant(tenancy_engine, auth_server, "e")
    issued = await admin.create_token(
        admin_nc, tenant, auth_server.url, expires_in=dt.timedelta(seconds=2)
    )
    nc = await eventstore.connect(client_options(auth_server, tenant, issued.token))
    # The user JWT expires with the token: the server closes the live connection too.
    await eventually(lambda: _disconnected(nc), timeout_s=10)
    await nc.close()
    await refused(auth_server, tenant, issued.token)


async def _disconnected(nc: NATS) -> bool:
    return not nc.is_connected


async def test_revocation_closes_live_connection_within_10s(
    tenancy_engine: Engine, auth_server: NatsServer, admin_nc: NATS
) -> None:
    tenant, token = await new_tenant(tenancy_engine, auth_server, "k")
    nc = await eventstore.connect(client_options(auth_server, tenant, token))
    assert await append(nc, Append(Scope(tenant).event("before"), b"{}")) > 0
    start = time.monotonic()
    await admin.revoke_token(admin_nc, parse_token(token).token_id)
    await eventually(lambda: _disconnected(nc), timeout_s=10)
    delay = time.monotonic() - start
    print(f"revocation closed the live connection after {delay * 1000:.0f} ms")
    assert delay < 10
    # ... and it stays out: every reconnect is refused.
    time_left = time.monotonic() + 2
    while time.monotonic() < time_left:
        assert not nc.is_connected
        await eventually(lambda: _disconnected(nc), timeout_s=1)
    await nc.close()


def test_worker_needs_only_the_token() -> None:
    token = "nct_" + _payload({"t": "acme", "u": "tls://nats.example:4222", "id": "abc123def"})
    token += ".s3cr3ts3cr3ts3cr3t"
    settings = ClientSettings.from_env({"HATCHET_CLIENT_TOKEN": token})
    assert (settings.tenant, settings.nats_url) == ("acme", "tls://nats.example:4222")
    assert settings.nats_options("x").inbox_prefix == "_INBOX_acme"
    moved = ClientSettings.from_env(
        {"HATCHET_CLIENT_TOKEN": token, "HATCHET_CLIENT_HOST_PORT": "10.0.0.1:4222"}
    )
    assert moved.nats_url == "10.0.0.1:4222"
    with pytest.raises(ConfigError, match="for tenant 'acme'"):
        ClientSettings.from_env({"HATCHET_CLIENT_TOKEN": token, "HATCHET_CLIENT_TENANT_ID": "x"})


def _payload(claims: dict[str, str]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def _natchet(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "natchet.cli", *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_cli_tenant_and_token_lifecycle(
    tenancy_engine: Engine, auth_server: NatsServer, auth_dir: Path
) -> None:
    import asyncio
    import uuid

    server = ["--nats-url", auth_server.url, "--nats-auth-file", str(auth_dir / AUTH_FILE)]
    name = f"c{uuid.uuid4().hex[:10]}"
    created = json.loads(
        await asyncio.to_thread(
            _natchet, "tenant", "create", name, "--max-bytes", "1000000", "--json", *server
        )
    )
    assert created["tenant"] == name and created["token"].startswith("nct_")
    listed = json.loads(await asyncio.to_thread(_natchet, "tenant", "list", "--json", *server))
    assert any(t["tenant"] == name and t["max_bytes"] == 1000000 for t in listed)
    await eventually(lambda: tenancy_engine.provisioner.ready(name).is_set())  # type: ignore[union-attr]
    info = await log_nc(tenancy_engine, name).jetstream().stream_info(f"natchet-{name}")
    assert info.config.max_bytes == 1000000
    # The account it lists is the one the server's monitoring endpoint holds its queues in
    # (what KEDA's JetStream scaler is told: examples/kubernetes/keda-scaledobject.yaml).
    [account] = [t["nats_account"] for t in listed if t["tenant"] == name]
    status, body = await http_get(f"{auth_server.monitor_url}/jsz?acc={account}&consumers=true")
    [details] = json.loads(body)["account_details"]
    assert status == 200 and details["name"] == account
    assert {f"natchet-{name}", f"tasks-{name}"} <= {s["name"] for s in details["stream_detail"]}

    extra = json.loads(
        await asyncio.to_thread(
            _natchet,
            "token",
            "create",
            "--tenant",
            name,
            "--name",
            "ci",
            "--expires",
            "1h",
            "--json",
            *server,
        )
    )
    tokens = json.loads(await asyncio.to_thread(_natchet, "token", "list", "--json", *server))
    mine = {t["id"]: t for t in tokens if t["tenant"] == name}
    assert set(mine) == {created["id"], extra["id"]}
    assert mine[extra["id"]]["expires_at"] is not None
    assert all("token" not in t and "secret" not in json.dumps(t) for t in tokens)

    nc = await eventstore.connect(client_options(auth_server, name, extra["token"]))
    await nc.close()
    await asyncio.to_thread(_natchet, "token", "revoke", extra["id"], *server)
    await refused(auth_server, name, extra["token"])

    hint = await asyncio.to_thread(_natchet, "token", "nats-context", created["token"])
    assert f"pub {name}.default.events." in hint and "--inbox-prefix _INBOX_" in hint


async def test_callout_forgets_connections_when_they_close(
    tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    """What the callout remembers of a token's connections (to kick them on revocation)
    is pruned on the server's disconnect events: it does not grow with every connect."""
    tenant, token = await new_tenant(tenancy_engine, auth_server, "p")
    assert tenancy_engine.tenancy is not None
    callout = tenancy_engine.tenancy.callout
    assert callout is not None
    token_id = parse_token(token).token_id
    conns = [await eventstore.connect(client_options(auth_server, tenant, token)) for _ in range(3)]
    assert len(callout.connections[token_id]) == 3
    for nc in conns:
        await nc.close()
    await eventually(lambda: token_id not in callout.connections)


async def test_a_tenant_stuck_in_setup_does_not_hold_up_other_tenants(
    tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    """The callout answers concurrently: while connects of a tenant whose accounts are not
    ready wait (and are then refused), another tenant's connect goes through."""
    import asyncio

    stuck, stuck_token = await new_tenant(tenancy_engine, auth_server, "s")
    fine, fine_token = await new_tenant(tenancy_engine, auth_server, "o")
    assert tenancy_engine.provisioner is not None
    tenancy_engine.provisioner._ready[stuck] = asyncio.Event()  # as if its setup hung
    waiting = [
        asyncio.create_task(eventstore.connect(client_options(auth_server, stuck, stuck_token)))
        for _ in range(4)
    ]
    callout = tenancy_engine.tenancy.callout if tenancy_engine.tenancy else None
    assert callout is not None
    await eventually(lambda: len(callout._answering) >= 4)  # they reached the callout first
    nc = await eventstore.connect(client_options(auth_server, fine, fine_token))
    assert not all(t.done() for t in waiting), "the other tenant waited behind them"
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectError) for r in results)
    tenancy_engine.provisioner.ready(stuck).set()
    await nc.close()


async def test_connection_limit_of_a_tenant_is_enforced_by_the_server(
    tenancy_engine: Engine, auth_server: NatsServer, admin_nc: NATS
) -> None:
    import uuid

    name = f"m{uuid.uuid4().hex[:10]}"
    await admin.create_tenant(admin_nc, name, max_connections=2)
    token = (await admin.create_token(admin_nc, name, auth_server.url)).token
    conns = [await eventstore.connect(client_options(auth_server, name, token)) for _ in range(2)]
    start = time.monotonic()
    with pytest.raises(ConnectError, match="max_connections"):
        await eventstore.connect(client_options(auth_server, name, token))
    assert time.monotonic() - start < REFUSAL_S  # said at once, not at a timeout
    await conns[0].close()

    async def room_again() -> bool:
        try:
            nc = await eventstore.connect(client_options(auth_server, name, token))
        except ConnectError:
            return False
        conns.append(nc)
        return True

    await eventually(room_again)
    for nc in conns:
        await nc.close()


async def test_callout_has_the_service_lifecycle(
    tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    """A second callout responder (beside the engine's): async with runs it, shutdown()
    returns once it has stopped, and again does nothing; connects still work meanwhile."""
    from natchet.tenancy.callout import CalloutService

    assert tenancy_engine.tenancy is not None and tenancy_engine.provisioner is not None
    auth = tenancy_engine.provisioner.auth
    assert auth is not None
    conn = await eventstore.connect(auth.options(auth_server.url, "callout-2", "callout"))
    callout = CalloutService(conn, tenancy_engine.tenancy.view, auth, tenancy_engine.provisioner)
    async with callout:
        await eventually(lambda: callout.running)
        tenant, token = await new_tenant(tenancy_engine, auth_server, "l")
        nc = await eventstore.connect(client_options(auth_server, tenant, token))
        await nc.close()
    assert not callout.running
    await callout.shutdown()
    await eventstore.close(conn)
