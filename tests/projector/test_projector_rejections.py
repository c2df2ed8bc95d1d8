"""Bad input is recorded and skipped, never blocks what comes after it: a non-JSON event is
kept as raw text, an undecodable run message becomes a rejection, and so does one
Postgres refuses."""

from __future__ import annotations

import random
import string
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import Writer, at, expected_run, read_all, workflow

import eventstore
import schemas
from eventstore import Append
from projector import Projector, apply_records, dump_tables, get_run, list_events, migrate
from schemas import RunCreated, StepDef, StepLog, StepQueued

WAIT_S = 30.0


async def raw(nc: NATS, subject: str, body: bytes) -> int:
    return await eventstore.append(nc, Append(subject, body))


async def write_bad_messages(nc: NATS, tenant: str) -> dict[int, str]:
    """Append one of each kind of bad message; return seq -> what its rejection says."""
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)
    run = str(uuid.uuid4())
    long_name = "".join(random.Random(1).choices(string.ascii_letters, k=4000))
    long_step = RunCreated(run, "diamond", "v1", {}, (StepDef(long_name),))
    good_queued = schemas.encode(StepQueued(run, "a", 1))
    bad_attempt = good_queued.replace(b'"attempt":1', b'"attempt":"x"')
    bad_time = b'{"run_id":"%s","status":"FAILED","at":"soon"}' % run.encode()
    # Worker heartbeats are not projected at all, not even a bad one as a rejection.
    await raw(nc, scope.worker("w1"), b"garbage")
    return {
        await raw(nc, scope.run(run, "created"), b"garbage"): "not valid JSON",
        await raw(nc, scope.run(run, "exploded"), b"{}"): "unknown run message kind",
        await raw(nc, scope.run(run, "queued"), bad_attempt): "attempt must be an integer",
        await raw(nc, scope.run(run, "finished"), bad_time): "not an ISO-8601 time",
        await raw(nc, scope.run("other", "queued"), good_queued): "differs from the subject",
        await raw(nc, scope.task("diamond", "a"), b"[1]"): "must be a JSON object",
        await raw(nc, f"{tenant}.bad!ns.events.x", b"{}"): "not a natchet subject",
        await w.put(long_step): "postgres refused the message",
    }


async def test_bad_messages_are_recorded_and_skipped(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)
    await w.put(workflow())
    bad_event = await raw(nc, scope.event("order:created"), b"not json {\xff")
    nul_event = await raw(nc, scope.event("nul"), schemas.encode_json({"s": "a\x00b"}))
    expected = await write_bad_messages(nc, tenant)
    diamond = await w.diamond()
    await w.put(StepLog(diamond.run_id, "a", 1, 1, "nul\x00here", at=at(diamond.t + 20)))

    async with Projector(nc, dsn, tenant) as p:
        await p.wait_caught_up(timeout_s=WAIT_S)

    tables = await dump_tables(conn)
    reasons = {seq: reason for _, seq, _, reason, _ in tables["rejections"]}
    assert sorted(reasons) == sorted(expected)
    for seq, text in expected.items():
        assert text in reasons[seq], (seq, reasons[seq])

    events = {e["seq"]: e for e in await list_events(conn, tenant=tenant)}
    assert events[bad_event]["valid"] is False
    assert events[bad_event]["payload"] is None
    assert events[bad_event]["raw"] == "not json {\ufffd"
    assert events[nul_event]["valid"] is True
    assert events[nul_event]["payload"] == {"s": "a\ufffdb"}

    # What came after the bad messages is all there.
    run = await get_run(conn, diamond.run_id, tenant=tenant)
    assert run is not None
    assert run["steps"][0]["logs"][-1]["line"] == "nul\ufffdhere"
    run["steps"][0]["logs"].pop()
    assert run == expected_run(diamond, tenant)

    # Rejections are as idempotent as the rest.
    await apply_records(conn, tenant, await read_all(nc, tenant))
    assert await dump_tables(conn) == tables
    await migrate(conn, "again")
    await apply_records(conn, tenant, await read_all(nc, tenant), schema="again")
    assert await dump_tables(conn, "again") == tables
