"""The log is append-only for real, even for the tenant whose log it is: rollup, per-message
TTLs and purges are refused and change nothing; headers that JetStream acts on cannot be
relayed into another tenant; batch headers do not stall another tenant's dispatcher."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from nats.aio.client import Client as NATS

import eventstore
from dispatcher.partition import SNAPSHOT_NAME
from dispatcher.snapshot import load
from eventstore import (
    Append,
    LogFullError,
    PermissionDeniedError,
    SnapshotStore,
    append,
    snapshot_bucket,
)
from eventstore.connection import request
from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from natchet.tenancy import admin
from schemas import Scope, encode, stream_name
from tests.conftest import eventually, running
from tests.tenancy.conftest import (
    Attacker,
    Victim,
    client_options,
    echo_workflow,
    hatchet_with_token,
    log_nc,
)
from tests.tenancy.watch import TenantView, tenant_view, unchanged
from worker.declare import spec_of

pytestmark = pytest.mark.timeout(120)


async def ack_of(nc: NATS, subject: str, headers: dict[str, str], body: bytes = b"{}") -> Any:
    reply = await nc.request(subject, body, headers=headers, timeout=5)
    return orjson.loads(reply.data)


async def own_log(engine: Engine, tenant: str) -> tuple[int, int]:
    info = await log_nc(engine, tenant).jetstream().stream_info(stream_name(tenant))
    return info.state.messages, info.state.last_seq


ROLLUPS = ({"Nats-Rollup": "all"}, {"Nats-Rollup": "sub"})


@pytest.mark.parametrize(
    ("headers", "why"),
    [(ROLLUPS[0], "rollup"), (ROLLUPS[1], "rollup"), ({"Nats-TTL": "1s"}, "ttl")],
    ids=["rollup-all", "rollup-sub", "ttl"],
)
async def test_rollup_and_ttl_on_own_log_are_refused(
    attacker: Attacker, tenancy_engine: Engine, headers: dict[str, str], why: str
) -> None:
    """A rollup would replace the tenant's history with one message, a TTL would make a
    message vanish: the log refuses both, and nothing changes."""
    before = await own_log(tenancy_engine, attacker.tenant)
    ack = await ack_of(attacker.nc, Scope(attacker.tenant).event("x"), headers)
    assert "error" in ack and why in ack["error"]["description"].lower()
    await unchanged(attacker.nc, lambda: own_log(tenancy_engine, attacker.tenant), before)


async def test_purge_and_delete_of_own_log_are_refused(
    attacker: Attacker, tenancy_engine: Engine
) -> None:
    before = await own_log(tenancy_engine, attacker.tenant)
    stream = stream_name(attacker.tenant)
    for subject, body in (
        (f"$JS.API.STREAM.PURGE.{stream}", b"{}"),
        (f"$JS.API.STREAM.DELETE.{stream}", b""),
        (f"$JS.API.STREAM.MSG.DELETE.{stream}", b'{"seq": 1}'),
        (f"$JS.API.STREAM.UPDATE.{stream}", orjson.dumps({"name": stream})),
    ):
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)
    await unchanged(attacker.nc, lambda: own_log(tenancy_engine, attacker.tenant), before)


def erasures(stream: str, seq: int, subject: str) -> list[tuple[str, bytes]]:
    """Every way the JetStream API takes to remove message ``seq`` (on ``subject``) of
    ``stream``: deleted (overwritten or not), or purged (all, by subject, below a sequence,
    keeping the last)."""
    delete, purge = f"$JS.API.STREAM.MSG.DELETE.{stream}", f"$JS.API.STREAM.PURGE.{stream}"
    return [
        (delete, orjson.dumps({"seq": seq})),
        (delete, orjson.dumps({"seq": seq, "no_erase": True})),
        (delete, orjson.dumps({"seq": seq, "no_erase": False})),
        (purge, b""),
        (purge, orjson.dumps({"filter": subject})),
        (purge, orjson.dumps({"seq": seq + 1})),
        (purge, orjson.dumps({"keep": 1})),
        (purge, orjson.dumps({"filter": subject, "keep": 0})),
    ]


async def raw_publishes(
    server: NatsServer,
    tenant: str,
    token: str,
    requests: list[tuple[str, bytes]],
    control: tuple[str, bytes],
) -> tuple[list[str], str]:
    """``requests`` sent as the NATS protocol itself on a socket of the tenant's own (its
    token, replies to its inbox), no client library: every line the server answered them
    with; then ``control``, a request the tenant may make, and the answer it got (so the
    socket could have been answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    inbox = f"_INBOX_{tenant}.raw"
    lines: list[str] = []

    async def read_until(stop: str) -> str:
        """Lines into ``lines`` until one starting with ``stop`` (returned, not kept)."""
        while True:
            line = (await reader.readline()).decode().rstrip("\r\n")
            assert line, f"the server closed the connection: {lines}"
            if line.startswith(("MSG ", "HMSG ")):  # the payload's size ends the line
                payload = await reader.readexactly(int(line.split()[-1]) + 2)
                line += " " + payload[:-2].decode(errors="replace")
            if line.startswith(stop):
                return line
            if line.startswith(("INFO ", "PONG")):  # the server's news, a stray pong
                continue
            if line.startswith("-ERR") and "authorization" in line.lower():
                raise AssertionError(f"the tenant's token was refused: {line}")
            lines.append(line)

    try:
        info = await asyncio.wait_for(reader.readline(), 10)
        assert info.startswith(b"INFO "), info
        connect = {
            "auth_token": token,
            "verbose": False,
            "pedantic": False,
            "protocol": 1,
            "headers": True,
            "no_responders": True,
            "lang": "raw",
            "version": "0",
            "name": "raw-attacker",
        }
        writer.write(b"CONNECT " + orjson.dumps(connect) + b"\r\nPING\r\n")
        await asyncio.wait_for(read_until("PONG"), 10)  # authenticated (the callout said yes)
        writer.write(f"SUB {inbox}.* 1\r\n".encode())
        for n, (subject, body) in enumerate(requests):
            writer.write(f"PUB {subject} {inbox}.{n} {len(body)}\r\n".encode() + body + b"\r\n")
        writer.write(b"PING\r\n")
        await asyncio.wait_for(read_until("PONG"), 10)  # every publish above was processed
        subject, body = control
        writer.write(f"PUB {subject} {inbox}.control {len(body)}\r\n".encode() + body + b"\r\n")
        answer = await asyncio.wait_for(read_until(f"HMSG {inbox}.control "), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return lines, answer


async def own_messages(engine: Engine, tenant: str, seqs: list[int]) -> list[tuple[str, bytes]]:
    """Messages ``seqs`` of the tenant's log, as the engine's own connection reads them."""
    out = []
    for seq in seqs:
        record = await eventstore.direct_get(log_nc(engine, tenant), tenant, seq)
        assert record is not None, f"message {seq} of {tenant}'s log is gone"
        out.append((record.subject, record.data))
    return out


async def test_a_tenant_cannot_delete_or_purge_a_message_it_stored(
    attacker: Attacker, tenancy_engine: Engine, auth_server: NatsServer
) -> None:
    """A stores messages, then aims every delete and purge the JetStream API takes at them,
    with its token: through the client library and as raw protocol on a socket. Each is
    refused by the server, and the engine's connection reads every message back as stored,
    the log starting at 1 with no gap."""
    tenant, stream = attacker.tenant, stream_name(attacker.tenant)
    stored = []
    for n in range(3):
        subject = Scope(tenant).event(f"keep{n}")
        seq = await append(attacker.nc, Append(subject, orjson.dumps({"n": n})))
        stored.append((seq, subject, orjson.dumps({"n": n})))
    seqs = [seq for seq, _, _ in stored]
    expected = [(subject, data) for _, subject, data in stored]
    assert await own_messages(tenancy_engine, tenant, seqs) == expected  # the control
    attempts = [a for seq, subject, _ in stored for a in erasures(stream, seq, subject)]

    for subject, body in attempts:
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)

    read = (f"$JS.API.DIRECT.GET.{stream}", orjson.dumps({"seq": seqs[0]}))
    answers, control = await raw_publishes(auth_server, tenant, attacker.token, attempts, read)
    assert control.endswith(expected[0][1].decode()), control  # direct gets answer with headers
    refused = [line for line in answers if "permissions violation for publish" in line.lower()]
    assert len(refused) == len(attempts) == len(answers), answers
    assert {line.split(" to ", 1)[1].strip("\"'") for line in refused} == {s for s, _ in attempts}

    assert await own_messages(tenancy_engine, tenant, seqs) == expected
    first, messages, last = await own_log_bounds(tenancy_engine, tenant)
    assert first == 1 and messages == last >= max(seqs)


async def test_the_log_itself_refuses_deletes_and_purges(
    attacker: Attacker, tenancy_engine: Engine
) -> None:
    """Behind the tenant's permissions, the stream: even the engine's own connection, which
    may call its log's JetStream API, is refused every delete and purge (deny_delete,
    deny_purge), and the message stays."""
    tenant, stream = attacker.tenant, stream_name(attacker.tenant)
    subject = Scope(tenant).event("keep")
    seq = await append(attacker.nc, Append(subject, b'{"kept": true}'))
    engine_nc = log_nc(tenancy_engine, tenant)
    for api, body in erasures(stream, seq, subject):
        reply = orjson.loads((await request(engine_nc, api, body, timeout_s=5)).data)
        assert reply.get("success") is not True and "error" in reply, (api, body, reply)
        assert "not permitted" in reply["error"]["description"], (api, body, reply)
    assert await own_messages(tenancy_engine, tenant, [seq]) == [(subject, b'{"kept": true}')]
    first, messages, last = await own_log_bounds(tenancy_engine, tenant)
    assert first == 1 and messages == last


@pytest.mark.parametrize(
    "headers",
    [*ROLLUPS, {"Nats-TTL": "1s"}, {"Nats-Batch-Id": "x", "Nats-Batch-Sequence": "1"}],
    ids=["rollup-all", "rollup-sub", "ttl", "batch"],
)
async def test_headers_cannot_be_relayed_into_other_tenant(
    attacker: Attacker,
    victim: Victim,
    tenancy_engine: Engine,
    tdb: psycopg.AsyncConnection[Any],
    headers: dict[str, str],
) -> None:
    """A stores (or tries to store) a message carrying headers JetStream acts on and
    direct-gets it with reply into B's events: B's log is untouched."""

    async def look() -> TenantView:
        return await tenant_view(tenancy_engine, tdb, victim.tenant)

    before = await look()
    subject = Scope(attacker.tenant).event("relay")
    await attacker.nc.publish(subject, b"{}", headers=headers)
    batch = {**headers, "Nats-Batch-Commit": "1"} if "Nats-Batch-Id" in headers else headers
    await attacker.nc.publish(subject, b"{}", headers=batch)
    api = f"$JS.API.DIRECT.GET.{stream_name(attacker.tenant)}.{subject}"
    for _ in range(60):  # a burst, as the table's "stalls per burst" row did
        await attacker.nc.publish(api, b"", reply=Scope(victim.tenant).event("echo"))
        await attacker.nc.publish(
            Scope(attacker.tenant).event("y"), b"{}", headers=batch, reply=victim_event(victim)
        )
    await unchanged(attacker.nc, look, before)


def victim_event(victim: Victim) -> str:
    return Scope(victim.tenant).event("echo")


async def test_batch_headers_do_not_stall_other_tenants_dispatcher(
    attacker: Attacker, victim: Victim
) -> None:
    """A burst of uncommitted batch starts, aimed every way A can aim them; B's dispatcher
    still runs B's workflow at once (it used to stall ~11 s per burst)."""
    for n in range(60):
        headers = {"Nats-Batch-Id": f"b{n}", "Nats-Batch-Sequence": "1"}
        await attacker.nc.publish(
            Scope(attacker.tenant).event("y"), b"{}", headers=headers, reply=victim_event(victim)
        )
    await attacker.nc.flush()
    hatchet = hatchet_with_token(victim.token)
    worker = hatchet.worker("b-worker", max_runs=2)
    worker.register_workflow(echo_workflow(hatchet))
    async with running(worker):
        ref = await hatchet.admin.aio_run_workflow("Echo", {"after": "burst"})
        assert await ref.result() == {"say": {"said": {"after": "burst"}}}
    hatchet.close()


async def test_full_log_refuses_new_messages_and_keeps_old_ones(
    tenancy_engine: Engine, auth_server: NatsServer, admin_nc: NATS
) -> None:
    """At its quota the log refuses (the publisher is told why), drops nothing, and the
    engine records it; raising the quota lets everything through again."""
    name = f"q{uuid.uuid4().hex[:10]}"
    await admin.create_tenant(admin_nc, name, max_bytes=32 * 1024)
    issued = await admin.create_token(admin_nc, name, auth_server.url)
    hatchet = hatchet_with_token(issued.token)
    nc = await eventstore.connect(client_options(auth_server, name, issued.token))
    scope = Scope(name)
    definition = spec_of(echo_workflow(hatchet)).definition
    await append(nc, Append(scope.workflow("Echo"), encode(definition)))
    accepted = 0
    with pytest.raises(LogFullError, match="log is full"):
        for n in range(10_000):
            await append(nc, Append(scope.event("echo"), orjson.dumps({"n": n})))
            accepted += 1
    first, messages, last = await own_log_bounds(tenancy_engine, name)
    assert accepted > 0 and first == 1 and messages == last  # nothing was dropped for room

    async def recorded() -> bool:
        assert tenancy_engine.tenancy is not None
        return name in tenancy_engine.tenancy.view.state.full

    await eventually(recorded)
    state = await admin.load_state(admin_nc)
    assert name in state.full  # what `natchet tenant list` shows as log_full_since

    await admin.set_limits(admin_nc, name, max_bytes=-1)

    async def room_again() -> bool:
        try:
            await append(nc, Append(scope.event("after"), b"{}"))
        except LogFullError:
            return False
        return True

    await eventually(room_again)
    first, messages, last = await own_log_bounds(tenancy_engine, name)
    assert first == 1 and messages == last
    await nc.close()
    hatchet.close()


async def own_log_bounds(engine: Engine, tenant: str) -> tuple[int, int, int]:
    info = await log_nc(engine, tenant).jetstream().stream_info(stream_name(tenant))
    return info.state.first_seq, info.state.messages, info.state.last_seq


async def own_snapshot(engine: Engine, tenant: str) -> tuple[str, int] | None:
    """The bucket's settings, and the tenant's dispatcher snapshot as the engine reads it
    (the dispatcher stores a new one now and then: its sequence may move, never back)."""
    conn = log_nc(engine, tenant)
    info = await conn.jetstream().stream_info(f"OBJ_{snapshot_bucket(tenant)}")
    data = await SnapshotStore(conn, tenant, SNAPSHOT_NAME).load()
    return None if data is None else (repr(info.config), load(data).seq)


async def test_the_dispatcher_snapshot_is_out_of_the_tenants_reach(
    attacker: Attacker, tenancy_engine: Engine
) -> None:
    """The snapshot bucket lives in the tenant's log account, next to the log; no export
    names it, so a tenant can neither read it, nor write a snapshot the dispatcher would
    start from, nor purge or delete it: every subject that would is refused."""
    tenant = attacker.tenant
    bucket = snapshot_bucket(tenant)
    stream = f"OBJ_{bucket}"
    meta = f"$O.{bucket}.M.{base64.urlsafe_b64encode(b'dispatcher').decode()}"
    # The dispatcher stores its first snapshot once it has rebuilt.
    config, seq = await eventually(lambda: own_snapshot(tenancy_engine, tenant))
    for subject, body in (
        (meta, orjson.dumps({"name": "dispatcher", "nuid": "x", "size": 1})),
        (f"$O.{bucket}.C.x", b"{}"),
        (f"$JS.API.DIRECT.GET.{stream}", orjson.dumps({"last_by_subj": meta})),
        (f"$JS.API.DIRECT.GET.{stream}.{meta}", b""),
        (f"$JS.API.STREAM.MSG.GET.{stream}", orjson.dumps({"last_by_subj": meta})),
        (f"$JS.API.STREAM.INFO.{stream}", b""),
        (f"$JS.API.STREAM.PURGE.{stream}", b"{}"),
        (f"$JS.API.STREAM.DELETE.{stream}", b""),
        (f"$JS.API.STREAM.UPDATE.{stream}", orjson.dumps({"name": stream})),
    ):
        with pytest.raises(PermissionDeniedError):
            await request(attacker.nc, subject, body, timeout_s=3)
    await attacker.nc.flush()
    after = await own_snapshot(tenancy_engine, tenant)
    assert after is not None and after[0] == config and after[1] >= seq
