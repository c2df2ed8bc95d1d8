"""The projection of a log equals the projection of the same log with duplicates and
redeliveries mixed in, and agrees with the dispatcher on every verdict.

The logs come from the dispatcher simulation; the Postgres is the real embedded one, with
one database for the module and the tables truncated between examples.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from dispatcher import Event
from eventstore import Record
from natchet.dev.embedded import EmbeddedPostgres
from projector import TABLES, apply_records, dump_tables, migrate
from schemas import (
    RunFinished,
    RunStatus,
    StepAssigned,
    StepResult,
    WorkflowDef,
    encode,
    encode_json,
)
from schemas.durable import StepWaiting
from tests.property.harness import Logged, Sim
from tests.property.history import SCOPE
from tests.property.strategies import Action, Outcome, drain_outcomes, scripts, workflows

ONCE, AGAIN, DUPS = "once", "again", "dups"
Conn = psycopg.AsyncConnection[Any]
Dump = dict[str, list[tuple[Any, ...]]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pg(pg_server: EmbeddedPostgres) -> AsyncIterator[Conn]:
    """One database for the module, a schema per way of feeding the projector."""
    name = f"prop_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(pg_server.url(), autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    async with await psycopg.AsyncConnection.connect(pg_server.url(name)) as conn:
        for schema in (ONCE, AGAIN, DUPS):
            await migrate(conn, schema)
        yield conn
    async with await psycopg.AsyncConnection.connect(pg_server.url(), autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def truncate(conn: Conn) -> None:
    tables = [sql.Identifier(s, t) for s in (ONCE, AGAIN, DUPS) for t in TABLES]
    async with conn.transaction():
        await conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tables)))


def record(entry: Logged, seq: int | None = None) -> Record:
    m = entry.message
    data = encode_json(m.payload) if isinstance(m, Event) else encode(m)
    return Record(entry.seq if seq is None else seq, entry.subject, data)


def redelivered(records: list[Record], data: st.DataObject) -> list[list[Record]]:
    """The records in batches, now and then followed by an earlier window sent again (a
    projector that crashed before its checkpoint), in order or backwards."""
    batches, start = [], 0
    while start < len(records):
        end = min(len(records), start + data.draw(st.integers(1, 40), label="batch"))
        batches.append(records[start:end])
        if data.draw(st.booleans(), label="again"):
            window = records[data.draw(st.integers(0, end - 1), label="from") : end]
            batches.append(window[::-1] if data.draw(st.booleans(), label="backwards") else window)
        start = end
    return batches


def stored_again(log: list[Logged], data: st.DataObject) -> list[Record]:
    """Results and assignments stored a second time under a new sequence, later on (a
    worker that re-sent them after the duplicate window), before the last message."""
    workers = [
        i for i, e in enumerate(log[:-1]) if isinstance(e.message, StepResult | StepAssigned)
    ]
    if not workers:
        return [record(e) for e in log]
    picked = data.draw(st.lists(st.sampled_from(workers), max_size=15), label="copies")
    before: dict[int, list[Logged]] = {}
    for i in picked:
        j = data.draw(st.integers(i + 1, len(log) - 1), label="to")
        if len(before.setdefault(j, [])) < 9:
            before[j].append(log[i])
    out: list[Record] = []
    for j, entry in enumerate(log):
        out += [record(copy, entry.seq - 9 + k) for k, copy in enumerate(before.get(j, []))]
        out.append(record(entry))
    return out


async def without_last_seq(conn: Conn, dump: Dump, schema: str) -> Dump:
    cur = await conn.execute(
        "SELECT table_name, ordinal_position FROM information_schema.columns"
        " WHERE table_schema = %s AND column_name = 'last_seq'",
        (schema,),
    )
    drop = {t: p - 1 for t, p in await cur.fetchall()}
    await conn.rollback()
    return {
        t: [tuple(v for i, v in enumerate(row) if i != drop.get(t)) for row in rows]
        for t, rows in dump.items()
    }


async def assert_agrees_with_dispatcher(conn: Conn, sim: Sim) -> None:
    h = sim.history
    cur = await conn.execute(sql.SQL("SELECT id, status, error FROM {}.runs").format(ONCE_ID))
    runs = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    cur = await conn.execute(sql.SQL("SELECT run_id, name, status FROM {}.steps").format(ONCE_ID))
    steps = {(r[0], r[1]): r[2] for r in await cur.fetchall()}
    await conn.rollback()
    assert set(runs) == set(h.created) | h.rejected
    for run_id in h.rejected:
        assert runs[run_id][0] == RunStatus.FAILED
    for run_id, created in h.created.items():
        finished = h.finished.get(run_id)
        if finished is not None:
            assert runs[run_id] == (finished.status, finished.error)
        else:
            assert runs[run_id][0] in (RunStatus.QUEUED, RunStatus.RUNNING)
        names = [s.name for s in created.steps]
        names += [created.on_failure.name] if created.on_failure else []
        for name in names:
            verdict = h.verdicts.get((run_id, name))
            if verdict is not None:
                assert steps[(run_id, name)] == verdict.status, (run_id, name)
            elif (run_id, name) in h.kept_back:  # held back by flow control, never offered
                assert steps[(run_id, name)] == "QUEUED", (run_id, name)
            elif (run_id, name) not in h.queued:
                assert steps[(run_id, name)] == "PENDING", (run_id, name)
    cur = await conn.execute(
        sql.SQL("SELECT run_id, step, attempt, delivery, status FROM {}.attempts").format(ONCE_ID)
    )
    attempts = {tuple(r[:4]): r[4] for r in await cur.fetchall()}
    await conn.rollback()
    assert attempts == expected_attempts(sim.log)


def expected_attempts(log: list[Logged]) -> dict[tuple[str, str, int, int], str]:
    """Attempt statuses by the projector's rules: RUNNING once assigned; LOST when a later
    delivery is assigned (by its ``assigned`` or by a result carrying the assignment),
    CANCELLED when the run ends, if still RUNNING; SUSPENDED when it waits (a durable
    step), if still RUNNING; a result wins."""
    out: dict[tuple[str, str, int, int], str] = {}
    for entry in log:
        m = entry.message
        if isinstance(m, StepAssigned | StepResult):
            key = (m.run_id, m.step, m.attempt, m.delivery)
        if isinstance(m, StepAssigned) or (isinstance(m, StepResult) and m.started_at):
            for k, status in out.items():
                if k[:3] == key[:3] and k[3] < key[3] and status == "RUNNING":
                    out[k] = "LOST"
        if isinstance(m, StepAssigned):
            out.setdefault(key, "RUNNING")
        elif isinstance(m, StepResult):
            ok = "SUCCEEDED" if m.ok else "FAILED"
            out[key] = "CANCELLED" if m.handed_back else ok
        elif isinstance(m, StepWaiting):  # the delivery waits: its slot given back
            key = (m.run_id, m.step, m.attempt, m.delivery)
            if out.get(key, "RUNNING") == "RUNNING":
                out[key] = "SUSPENDED"
        elif isinstance(m, RunFinished):
            for k, status in out.items():
                if k[0] == m.run_id and status == "RUNNING":
                    out[k] = "CANCELLED"
    return out


ONCE_ID = sql.Identifier(ONCE)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(workflows(), scripts, drain_outcomes, st.data())
async def test_projection_ignores_duplicates_and_redeliveries(
    pg: Conn,
    wf: WorkflowDef,
    script: list[Action],
    answers: list[Outcome],
    data: st.DataObject,
) -> None:
    sim = Sim(wf)
    for action in script:
        sim.act(action)
    if data.draw(st.booleans(), label="drain"):
        sim.drain(answers)
    records = [record(e) for e in sim.log]
    await truncate(pg)

    await apply_records(pg, SCOPE.tenant, records, schema=ONCE)
    once = await dump_tables(pg, ONCE)
    assert once["rejections"] == []
    await assert_agrees_with_dispatcher(pg, sim)

    for batch in redelivered(records, data):
        await apply_records(pg, SCOPE.tenant, batch, schema=AGAIN)
    assert await dump_tables(pg, AGAIN) == once

    await apply_records(pg, SCOPE.tenant, stored_again(sim.log, data), schema=DUPS)
    dups = await without_last_seq(pg, await dump_tables(pg, DUPS), DUPS)
    assert dups == await without_last_seq(pg, once, ONCE)
