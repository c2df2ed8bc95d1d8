"""Concurrency keys in the read model (issue 15): a ``created`` with a key gives its run
the key and its workflow's concurrency; a run of a key that is QUEUED with no step queued
yet is held, and ``runs get`` says what for, until its first task; runs list by key; a
malformed concurrency is a rejection; a rebuild gives the live tables. The messages are
written by hand, as the dispatcher would (it creates a held run with no task)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from projector_scenario import SINGLE_STEPS, W1, Writer, at, read_all

import eventstore
import schemas
from eventstore import Append
from natchet.audit import as_of as as_of_view
from natchet.dev.embedded import NatsServer
from projector import Projector, dump_tables, get_run, list_runs
from projector.replay import replay
from schemas import RunCreated, RunFinished, RunStatus, Task, WorkflowDef
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from tests.conftest import eventually
from tests.support import natchet_cli as natchet

WAIT_S = 30.0
BY_USER = ConcurrencyDef("input.user_id", max_runs=1)
NEWEST = ConcurrencyDef("input.user_id", 2, LimitStrategy.CANCEL_NEWEST)
HELD = "concurrency key 'u1' (max_runs 1, GROUP_ROUND_ROBIN)"


def keyed_workflow() -> WorkflowDef:
    return WorkflowDef(
        name="single", version="v1", steps=SINGLE_STEPS, registered_at=at(0), concurrency=BY_USER
    )


def created(r: str, key: str, t: float, spec: ConcurrencyDef = BY_USER) -> RunCreated:
    return RunCreated(
        r, "single", "v1", {"user_id": key}, SINGLE_STEPS, created_at=at(t), concurrency=spec,
        concurrency_key=key,
    )  # fmt: skip


def task(r: str, key: str, t: float) -> Task:
    return Task(r, "single", "s", 1, {"user_id": key}, {}, 60.0, queued_at=at(t))


async def keyed_runs(w: Writer, t: float = 0.0) -> dict[str, Any]:
    """u1's first run (admitted: its task), its second (held), u2's run (admitted), and a
    run cancelled by CANCEL_NEWEST; returns their ids and the sequence where the second
    was still held (``held``), then the end (``end``)."""
    first, second, other, newest = (str(uuid.uuid4()) for _ in range(4))
    await w.put(created(first, "u1", t), task(first, "u1", t))
    held = await w.put(created(second, "u1", t + 1))
    await w.put(created(other, "u2", t + 2), task(other, "u2", t + 2))
    await w.put(
        created(newest, "u1", t + 3, NEWEST),
        RunFinished(
            newest, RunStatus.CANCELLED, "concurrency key 'u1' is full (CANCEL_NEWEST)", at(t + 3)
        ),
    )
    # u1's first run ends: the second is admitted (its first task offered).
    await w.put(w.assign((first, "s", 1, 1), W1, t + 4))
    await w.put(
        w.carried((first, "s", 1, 1), W1, t + 4, t + 5, 1), w.done((first, "s", 1, 1), 1, t + 5)
    )
    await w.put(RunFinished(first, RunStatus.SUCCEEDED, at=at(t + 5)))
    end = await w.put(task(second, "u1", t + 6))
    return {"first": first, "second": second, "other": other, "newest": newest, "held": held,
            "end": end}  # fmt: skip


async def test_keys_and_held_runs_fold_into_the_read_model(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(keyed_workflow())
    async with Projector(nc, dsn, tenant, batch_size=2) as live:
        runs = await keyed_runs(w)
        await live.wait_for_seq(runs["held"], timeout_s=WAIT_S)

        async def second_held() -> dict[str, Any] | None:
            run = await get_run(conn, runs["second"], tenant=tenant)
            await conn.rollback()
            return run

        run = await second_held()
        assert run is not None and run["status"] == "QUEUED"
        assert run["concurrency_key"] == "u1"
        assert run["concurrency"] == {
            "expression": "input.user_id",
            "max_runs": 1,
            "limit_strategy": "GROUP_ROUND_ROBIN",
        }
        assert run["waiting_for"] == HELD
        await live.wait_for_seq(runs["end"], timeout_s=WAIT_S)

    # Once its task is offered, it waits for no key.
    run = await eventually(second_held)
    assert run is not None and run["waiting_for"] is None
    assert [s["status"] for s in run["steps"]] == ["QUEUED"]
    first = await get_run(conn, runs["first"], tenant=tenant)
    assert first is not None and (first["status"], first["waiting_for"]) == ("SUCCEEDED", None)
    newest = await get_run(conn, runs["newest"], tenant=tenant)
    assert newest is not None and newest["status"] == "CANCELLED"
    assert newest["waiting_for"] is None and "CANCEL_NEWEST" in newest["error"]
    assert newest["concurrency"]["limit_strategy"] == "CANCEL_NEWEST"
    other = await get_run(conn, runs["other"], tenant=tenant)
    assert other is not None and other["concurrency_key"] == "u2"

    # Runs by key: u1's three, newest first; a workflow filter as well.
    u1 = await list_runs(conn, tenant=tenant, concurrency_key="u1")
    assert [r["id"] for r in u1] == [runs["newest"], runs["second"], runs["first"]]
    assert all(r["concurrency_key"] == "u1" for r in u1)
    both = await list_runs(conn, tenant=tenant, workflow="single", concurrency_key="u2")
    assert [r["id"] for r in both] == [runs["other"]]
    assert await list_runs(conn, tenant=tenant, workflow="other", concurrency_key="u2") == []
    await conn.rollback()

    # A rebuild from the log gives the live tables.
    connect = psycopg.AsyncConnection.connect
    async with await connect(dsn, autocommit=True) as live_db, await connect(dsn) as work:
        report = await replay(live_db, work, {tenant: nc}, "verified")
    assert report.differences == [] and report.rows > 0


async def raw(nc: NATS, subject: str, body: bytes) -> int:
    return await eventstore.append(nc, Append(subject, body))


async def test_a_malformed_concurrency_is_rejected(
    nc: NATS, tenant: str, dsn: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    scope = schemas.Scope(tenant)
    w = Writer(nc, scope)
    await w.put(keyed_workflow())
    good = schemas.encode(created("r-good", "u1", 0))
    bad = {
        "r-zero": (good.replace(b'"max_runs":1', b'"max_runs":0'), "max_runs"),
        "r-cel": (good.replace(b'"input.user_id"', b'"input."'), "concurrency"),
        "r-nokey": (good.replace(b'"concurrency_key":"u1"', b'"concurrency_key":null'), "exactly"),
        "r-strategy": (good.replace(b'"GROUP_ROUND_ROBIN"', b'"FIFO"'), "FIFO"),
    }
    rejected = {}
    for r, (body, words) in bad.items():
        seq = await raw(nc, scope.run(r, "created"), body.replace(b'"r-good"', f'"{r}"'.encode()))
        rejected[seq] = words
    last = await raw(nc, scope.run("r-good", "created"), good)

    async with Projector(nc, dsn, tenant, batch_size=3) as live:
        await live.wait_for_seq(last, timeout_s=WAIT_S)
    tables = await dump_tables(conn)
    reasons = {row[1]: row[3] for row in tables["rejections"]}
    assert sorted(reasons) == sorted(rejected), reasons
    for seq, words in rejected.items():
        assert words in reasons[seq], (seq, reasons[seq])
    for r in bad:
        assert await get_run(conn, r, tenant=tenant) is None
    run = await get_run(conn, "r-good", tenant=tenant)
    assert run is not None and run["waiting_for"] == HELD


async def test_runs_get_list_and_audit_show_the_key(
    nats_server: NatsServer, nc: NATS, tenant: str, dsn: str
) -> None:
    w = Writer(nc, schemas.Scope(tenant))
    await w.put(keyed_workflow())
    r, admitted = str(uuid.uuid4()), str(uuid.uuid4())
    await w.put(created(admitted, "u1", 0), task(admitted, "u1", 0))
    last = await w.put(created(r, "u1", 1))
    async with Projector(nc, dsn, tenant) as live:
        await live.wait_for_seq(last, timeout_s=WAIT_S)

    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant)
    assert "  concurrency key: 'u1'\n" in out
    assert f"  waiting for {HELD}\n" in out
    out = await natchet(nats_server.url, dsn, "runs", "get", admitted, "--tenant", tenant)
    assert "  concurrency key: 'u1'\n" in out and "waiting for" not in out
    got = json.loads(await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant,
                                   "--json"))  # fmt: skip
    assert (got["concurrency_key"], got["waiting_for"]) == ("u1", HELD)
    listed = json.loads(
        await natchet(
            nats_server.url, dsn, "runs", "list", "--tenant", tenant, "--concurrency-key", "u1",
            "--json",
        )
    )  # fmt: skip
    assert [x["id"] for x in listed["runs"]] == [r, admitted]
    none = await natchet(nats_server.url, dsn, "runs", "list", "--concurrency-key", "nobody")
    assert "no runs" in none

    out = await natchet(nats_server.url, dsn, "audit", r, "--tenant", tenant)
    assert "concurrency key 'u1' (max_runs 1, GROUP_ROUND_ROBIN)" in out

    # --as-of folds the log: held then, admitted once its task is offered.
    admitted_at = await w.put(task(r, "u1", 2))
    view = as_of_view(tenant, r, await read_all(nc, tenant), seq=last)
    assert view is not None and view["run"]["waiting_for"] == HELD
    assert view["run"]["concurrency"]["max_runs"] == 1
    view = as_of_view(tenant, r, await read_all(nc, tenant), seq=admitted_at)
    assert view is not None and view["run"]["waiting_for"] is None
    as_of = f"--as-of={last}"
    out = await natchet(nats_server.url, dsn, "runs", "get", r, "--tenant", tenant, as_of)
    assert f"  concurrency key: 'u1'\n  waiting for {HELD}\n" in out
