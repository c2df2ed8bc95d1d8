"""The engine's own records are out of tenants' reach, and the engine validates everything
it folds: a hostile record is logged and skipped, never fatal, and the engine restarts
cleanly over it. Run ids cannot be squatted across tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy
from psycopg import sql

import eventstore
from eventstore import Append, ConfigError, PermissionDeniedError, append
from eventstore.provision import log_stream_config
from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine
from natchet.tenancy import admin
from natchet.tenancy.accounts import TenantLimits
from natchet.tenancy.issuer import push_account, tenant_account_jwts
from natchet.tenancy.serverconf import AUTH_FILE, NatsAuth, write_server_files
from projector import get_run
from schemas import Scope
from schemas.tenancy import parse_token, tenant_subject, token_subject
from tests.conftest import eventually, running
from tests.tenancy.conftest import (
    Attacker,
    Victim,
    client_options,
    echo_workflow,
    hatchet_with_token,
    new_tenant,
)
from tests.tenancy.watch import system_view, unchanged

pytestmark = pytest.mark.timeout(180)


async def test_tenant_cannot_write_the_engines_records(
    attacker: Attacker, victim: Victim, tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    """A forged revocation of B's token and a tenant record with a bad name, published
    directly and relayed through a pub ack: refused, and nothing changes."""
    before = await system_view(tenancy_engine)
    b_nc = await eventstore.connect(client_options(auth_server, victim.tenant, victim.token))
    revoke = token_subject(parse_token(victim.token).token_id, "revoked")
    bad_tenant = "natchet.system.tenants.x"
    for subject, body in ((revoke, b'{"token_id": "x"}'), (bad_tenant, b'{"tenant": "BAD NAME"}')):
        with pytest.raises(PermissionDeniedError):
            await append(attacker.nc, Append(subject, body))
        await attacker.nc.publish(Scope(attacker.tenant).event("x"), body, reply=subject)
    await unchanged(attacker.nc, lambda: system_view(tenancy_engine), before)
    assert b_nc.is_connected
    await b_nc.close()
    assert tenancy_engine.tenancy is not None and tenancy_engine.tenancy.view.ready.is_set()


async def test_reserved_tenant_names_are_refused(admin_nc: NATS) -> None:
    for name in ("system", "natchet", "sys", "BAD NAME", "a.b"):
        with pytest.raises(ConfigError):
            await admin.create_tenant(admin_nc, name)


async def test_run_ids_cannot_be_squatted_across_tenants(
    attacker: Attacker, victim: Victim, tdb: psycopg.AsyncConnection[Any]
) -> None:
    """A takes, in its own tenant, the run id B will choose and the ids B's next events
    would get; B's runs still execute and show in Postgres as B's, and A's as A's."""
    chosen = f"run-{uuid.uuid4().hex[:8]}"
    a = hatchet_with_token(attacker.token)
    from dispatcher.decide import event_run_id

    squatted = [chosen] + [event_run_id(Scope(victim.tenant), seq, "Echo") for seq in range(1, 200)]
    for run_id in squatted[:20]:
        await a.admin.aio_run_workflow("Echo", {"squat": True}, run_id=run_id)
    a.close()
    b = hatchet_with_token(victim.token)
    worker = b.worker("b-worker", max_runs=4)
    worker.register_workflow(echo_workflow(b))
    async with running(worker):
        ref = await b.admin.aio_run_workflow("Echo", {"mine": True}, run_id=chosen)
        assert await ref.result() == {"say": {"said": {"mine": True}}}
        event = await b.event.aio_push("echo", {"by": "event"})

        async def event_run() -> dict[str, Any] | None:
            cur = await tdb.execute(
                "SELECT id FROM runs WHERE tenant = %s AND triggered_by_event_id = %s",
                (victim.tenant, event.event_id),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            run = await get_run(tdb, row[0], tenant=victim.tenant)
            return run if run and run["status"] == "SUCCEEDED" else None

        assert await eventually(event_run)
    b.close()

    async def both() -> bool:
        mine = await get_run(tdb, chosen, tenant=victim.tenant)
        theirs = await get_run(tdb, chosen, tenant=attacker.tenant)
        return bool(mine and theirs and mine["status"] == "SUCCEEDED")

    await eventually(both)
    mine = await get_run(tdb, chosen, tenant=victim.tenant)
    theirs = await get_run(tdb, chosen, tenant=attacker.tenant)
    assert mine is not None and mine["input"] == {"mine": True}
    assert theirs is not None and theirs["status"] == "FAILED"  # rejected: A has no Echo


# -- hostile records, on a server and engine of the test's own --------------------------


@pytest.fixture
async def own_stack(
    tmp_path: Path, pg_server: EmbeddedPostgres
) -> AsyncIterator[tuple[NatsServer, EngineSettings]]:
    write_server_files(tmp_path, NatsAuth.generate())
    name = f"h_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(pg_server.url(), autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with NatsServer(tmp_path / "store", config_file=tmp_path / "nats-server.conf") as server:
        yield (
            server,
            EngineSettings(
                server.url,
                pg_server.url(name),
                tenants=(),
                nats_auth_file=str(tmp_path / AUTH_FILE),
                discover_tenants=True,
            ),
        )


HOSTILE = [
    (tenant_subject("okname"), b"not json"),
    ("natchet.system.tenants.x", orjson.dumps({"tenant": "BAD NAME"})),
    ("natchet.system.tenants.system", orjson.dumps({"tenant": "system"})),
    ("natchet.system.tenants.evil", orjson.dumps({"tenant": "other"})),
    ("natchet.system.tenants.big", orjson.dumps({"tenant": "big", "max_bytes": "lots"})),
    (token_subject("abcdef12", "created"), orjson.dumps({"token_id": "abcdef12"})),
    (token_subject("abcdef13", "created"), orjson.dumps({"token_id": "zz", "tenant": "x"})),
    (token_subject("abcdef14", "revoked"), orjson.dumps({"token_id": "../../x"})),
    ("natchet.system.whatever", b"{}"),
]


async def test_hostile_system_records_are_skipped_and_the_engine_restarts(
    own_stack: tuple[NatsServer, EngineSettings],
) -> None:
    server, settings = own_stack
    async with Engine(settings) as engine:
        assert engine.nc is not None
        for subject, body in HOSTILE:
            await append(engine.nc, Append(subject, body))
        name, token = await new_tenant(engine, server, "after")  # the fold went on
        assert engine.tenancy is not None
        assert set(engine.tenancy.view.state.tenants) == {name}
        assert "system" not in engine.dispatchers and "evil" not in engine.dispatchers
    # A new engine over the same records starts cleanly and serves the good tenant.
    async with Engine(settings) as engine:
        await eventually(lambda: name in engine.dispatchers)
        hatchet = hatchet_with_token(token)
        worker = hatchet.worker("after-worker", max_runs=1)
        worker.register_workflow(echo_workflow(hatchet))
        async with running(worker):
            ref = await hatchet.admin.aio_run_workflow("Echo", {"ok": 1})
            assert await ref.result() == {"say": {"said": {"ok": 1}}}
        hatchet.close()


async def test_a_tenant_whose_stored_log_is_weaker_is_not_served(
    own_stack: tuple[NatsServer, EngineSettings],
) -> None:
    """Someone made tenant w's log with TTLs allowed and dropping old messages when full
    (by hand, or an older natchet): the engine refuses to serve w (its clients are refused)
    and serves the rest."""
    server, settings = own_stack
    auth = NatsAuth.load(Path(str(settings.nats_auth_file)))
    system = await eventstore.connect(auth.options(server.url, "test", "system"))
    for account in tenant_account_jwts(auth, "weak", TenantLimits()):
        await push_account(system, account)
    await system.close()
    log = await eventstore.connect(auth.options(server.url, "test", "log:weak"))
    weak = log_stream_config("weak")
    weak.allow_msg_ttl, weak.discard = True, DiscardPolicy.OLD
    await log.jetstream().add_stream(weak)
    await log.close()
    async with Engine(settings) as engine:
        assert engine.nc is not None and engine.provisioner is not None
        await admin.create_tenant(engine.nc, "weak")
        issued = await admin.create_token(engine.nc, "weak", server.url)
        await eventually(lambda: "weak" in engine.provisioner.failed)  # type: ignore[union-attr]
        assert "not append-only" in engine.provisioner.failed["weak"]
        with pytest.raises(eventstore.ConnectError):
            await eventstore.connect(client_options(server, "weak", issued.token))
        good, token = await new_tenant(engine, server, "good")
        nc = await eventstore.connect(client_options(server, good, token))
        assert await append(nc, Append(Scope(good).event("ok"), b"{}")) > 0
        await nc.close()


async def test_a_forged_replay_header_on_an_event_is_not_a_link_and_stalls_nothing(
    attacker: Attacker, tdb: psycopg.AsyncConnection[Any]
) -> None:
    """Events are anyone's JSON and their headers anyone's too: A publishes, with its own
    token, events whose ``Natchet-Replay-Of`` is a non-ASCII digit, a number past bigint,
    a later sequence or garbage. Each is projected as an event without a link, and the
    projector goes on to the next one (a value ``int`` refuses once crashed it on every
    restart)."""
    scope = Scope(attacker.tenant)
    first = await append(attacker.nc, Append(scope.event("plain"), b"{}"))
    forged = ["\u00b2", "9" * 30, str(first + 1000), "-1", "0x10", "1e3"]
    for value in forged:
        await attacker.nc.publish(
            scope.event("forged"), b"{}", headers={"Natchet-Replay-Of": value}
        )
    good = await append(
        attacker.nc,
        Append(scope.event("again"), b"{}", headers=(("Natchet-Replay-Of", str(first)),)),
    )

    async def projected() -> list[Any] | None:
        cur = await tdb.execute(
            "SELECT key, replay_of FROM events WHERE tenant = %s ORDER BY seq", (attacker.tenant,)
        )
        rows = await cur.fetchall()
        return rows if len(rows) == len(forged) + 2 else None

    rows = await eventually(projected, timeout_s=30)
    assert rows[0] == ("plain", None) and rows[-1] == ("again", first)
    assert rows[1:-1] == [("forged", None)] * len(forged)
    assert good > first
