"""Schema evolution: a log written in older message versions replays to the same state as
its current-version equivalent, through the upcasters of ``schemas.upcast`` (real Postgres,
the projector's own apply path; and the dispatcher's fold)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import psycopg

from dispatcher.folding import fold
from dispatcher.state import State
from eventstore import Record
from projector import apply_records, dump_tables, migrate
from schemas import RunCreated, TriggerKind, decode_subject, parse
from schemas.upcast import UPCASTERS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TENANT = "fixture"


def load(name: str) -> list[Record]:
    records = []
    for line in (FIXTURES / name).read_bytes().splitlines():
        item = orjson.loads(line)
        time = dt.datetime.fromisoformat(item["time"]) if item["time"] else None
        body = orjson.dumps(item["body"])
        records.append(Record(item["seq"], f"{TENANT}.{item['subject']}", body, None, time))
    return records


def kind_of(record: Record) -> str:
    parsed = parse(record.subject)
    return parsed.run_kind if parsed.area == "runs" else parsed.area


def test_every_upcaster_has_old_messages_in_the_fixture() -> None:
    old = {(kind_of(r), orjson.loads(r.data).get("v")) for r in load("log-v1.jsonl")}
    assert UPCASTERS, "no upcasters: nothing to evolve"
    for kind, version in UPCASTERS:
        assert (kind, version) in old, f"no {kind} v{version} message in tests/fixtures"


def test_the_old_log_differs_only_in_version_and_decodes_to_the_current_messages() -> None:
    old, new = load("log-v1.jsonl"), load("log-current.jsonl")
    assert [(r.seq, r.subject) for r in old] == [(r.seq, r.subject) for r in new]
    changed = [(o, n) for o, n in zip(old, new, strict=True) if o.data != n.data]
    assert {kind_of(o) for o, _n in changed} == {"created"}
    for o, n in changed:
        body = orjson.loads(o.data)
        assert body["v"] == 1 and "triggered_by" in body and "trigger" not in body
        was = decode_subject(parse(o.subject), o.data)
        now = decode_subject(parse(n.subject), n.data)
        assert isinstance(was, RunCreated) and was == now
    events = [o for o, _n in changed if orjson.loads(o.data)["triggered_by"] is not None]
    assert events, "the fixture has event-triggered runs"
    for o in events:
        created = decode_subject(parse(o.subject), o.data)
        assert created.trigger is not None and created.trigger.kind is TriggerKind.EVENT
        assert created.trigger.event_id == orjson.loads(o.data)["triggered_by"]["event_id"]
    for r in new:  # every message carries its version (events are users' own JSON)
        if kind_of(r) != "events":
            assert isinstance(orjson.loads(r.data).get("v"), int), r.subject


async def test_the_old_log_projects_to_the_same_tables(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    tables = {}
    for name, schema in (("log-v1.jsonl", "fixture_v1"), ("log-current.jsonl", "fixture_now")):
        async with conn.transaction():
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await migrate(conn, schema)
        await apply_records(conn, TENANT, load(name), schema=schema)
        tables[name] = await dump_tables(conn, schema)
    assert tables["log-v1.jsonl"] == tables["log-current.jsonl"]
    assert len(tables["log-v1.jsonl"]["runs"]) == 8


def test_the_old_log_folds_to_the_same_dispatcher_state() -> None:
    states = []
    for name in ("log-v1.jsonl", "log-current.jsonl"):
        state = State()
        for r in load(name):
            parsed = parse(r.subject)
            if parsed.area != "events":
                fold(state, parsed.scope, decode_subject(parsed, r.data))
        states.append(state)
    assert states[0] == states[1]
    assert states[0].done and states[0].workflows
