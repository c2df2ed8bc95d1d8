"""``natchet audit``: a run's history, or an event's and the runs it started, from the
JetStream log (``natchet.audit`` reads it and builds the entries; this prints them)."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from eventstore import Connection, LogGuarantees, Record, Tail, log_guarantees
from natchet.audit import (
    ENDS,
    NOT_RECORDED,
    PUBLISHER,
    WORKER,
    Attempts,
    RunNotFoundError,
    body_of,
    check_run_id,
    decoded,
    entries,
    entry,
    event_record,
    iso_time,
    read_run,
    run_summary,
    runs_of_event,
    short,
)
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.cli.output import dump_json, note, positive_int
from schemas.messages import Task
from schemas.subjects import Scope, SubjectError, parse, stream_name


def add_parser(sub: Any) -> None:
    au = sub.add_parser(
        "audit",
        help="a run's history (or an event's runs), read from the JetStream log",
        description="Every message of a run in log order, with who appended it; read from "
        "the JetStream log, not Postgres.",
    )
    au.add_argument("run_id", nargs="?", help="the run to audit")
    au.add_argument(
        "--event", type=positive_int, metavar="EVENT_ID", help="an event and the runs it started"
    )
    au.add_argument(
        "--json",
        action="store_true",
        help='{"run": ..., "attempts": [...], "entries": [...], "log": {...}};'
        " with --follow, an entry a line",
    )
    au.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    au.add_argument("--namespace", help="the run's namespace, when its id is in several")
    add_nats_flags(au, role="log")
    au.set_defaults(handler=audit)


# -- the command -----------------------------------------------------------------------


async def audit(args: argparse.Namespace) -> int:
    if (args.run_id is None) == (args.event is None):
        raise SubjectError("give a run id, or --event EVENT_ID (one of them)")
    tenant = tenant_of(args)
    if args.event is not None:
        async with open_nats(args, role="log", tenant=tenant) as nc:
            return await audit_event(nc, tenant, args)
    run_id = check_run_id(args.run_id)
    async with open_nats(args, role="log", tenant=tenant) as nc:
        found = await read_run_or_say(nc, tenant, run_id, args.namespace)
        if found is None:
            return 1
        scope, pairs, end = found
        lines, attempts = entries(pairs)
        run = run_summary(run_id, scope, pairs)
        if args.follow:
            return await follow_run(nc, scope, run_id, pairs, lines, attempts, end, args.json)
        log = await log_guarantees(nc, tenant)
    if args.json:
        attempt_rows = list(attempts.rows.values())
        dump_json({"run": run, "attempts": attempt_rows, "entries": lines, "log": log_json(log)})
    else:
        print_run(run, lines)
        print(log_line(log))
    return 0


async def read_run_or_say(
    nc: Connection, tenant: str, run_id: str, namespace: str | None
) -> tuple[Scope, list[tuple[Record, Any]], int] | None:
    """``read_run``, or ``None`` once a run the log does not hold is said on stderr."""
    try:
        return await read_run(nc, tenant, run_id, namespace)
    except RunNotFoundError:
        note(f"natchet: no run {run_id} in tenant {tenant}'s log")
        return None


async def follow_run(
    nc: Connection,
    scope: Scope,
    run_id: str,
    pairs: list[tuple[Record, Any]],
    lines: list[dict[str, Any]],
    attempts: Attempts,
    end: int,
    as_json: bool,
) -> int:
    """Print the history, then every new message of the run until it ends."""
    if not as_json:
        print_header(run_summary(run_id, scope, pairs))
    for e in lines:
        show(e, as_json)
    done = any(e["kind"] in ENDS for e in lines)
    # The namespace's tasks, whatever the workflow (a requested run may not be created yet).
    subjects = [scope.run_filter(run_id), f"{scope.prefix}.tasks.>"]
    tail = Tail(nc, stream_name(scope.tenant), end + 1, subjects=subjects, idle_poll_s=0.5)
    try:
        while not done:
            for record in await tail.next_batch():
                message = decoded(record)
                if isinstance(message, Task) and message.run_id != run_id:
                    continue
                attempts.add(message)
                e = entry(record, message)
                if e["kind"] == "log" and (who := attempts.who(e)) is not None:
                    e["actor"] = who
                show(e, as_json)
                done = done or e["kind"] in ENDS
    finally:
        await tail.close()
    return 0


async def audit_event(nc: Connection, tenant: str, args: argparse.Namespace) -> int:
    record = await event_record(nc, tenant, args.event)
    if record is None:
        note(f"natchet: no event {args.event} in tenant {tenant}'s log")
        return 1
    parsed = parse(record.subject)
    scope = parsed.scope
    event = {
        "id": record.seq,
        "seq": record.seq,
        "time": iso_time(record.time),
        "namespace": scope.namespace,
        "key": parsed.event_key,
        "subject": record.subject,
        "payload": body_of(record.data),
        "headers": record.headers or {},
        "publisher": NOT_RECORDED,
    }
    runs = await runs_of_event(nc, scope, parsed.event_key, record.seq)
    log = await log_guarantees(nc, tenant)
    if args.json:
        dump_json({"event": event, "runs": runs, "log": log_json(log)})
        return 0
    print(
        f"event {record.seq}  {parsed.event_key}  namespace {scope.namespace}"
        f"  stored {event['time']}"
    )
    print(f"  publisher: {NOT_RECORDED}")
    print(f"  payload: {short(event['payload'])}")
    if not runs:
        print("started no run (no workflow of this namespace was registered for its key)")
    else:
        print(f"started {len(runs)} run{'s' if len(runs) != 1 else ''}:")
        for r in runs:
            print(f"  {r['id']:36}  {r['workflow']:20}  {r['status']:9}  seq {r['created_seq']}")
        print("`natchet audit RUN_ID` shows one of them")
    print(log_line(log))
    return 0


# -- what people read ------------------------------------------------------------------


def print_header(run: dict[str, Any]) -> None:
    by = run["triggered_by"]
    trigger = f"  triggered by event {by['event_id']} ({by['event_key']})" if by else ""
    print(
        f"run {run['id']}  {run['workflow'] or '-'}  {run['status']}"
        f"  tenant {run['tenant']}  namespace {run['namespace']}{trigger}"
    )
    if (parent := run.get("parent")) is not None:
        print(f"  child of run {parent['run_id']} (step {parent['step']}, key {parent['key']})")
    for child in run.get("children", []):
        print(f"  spawned child run {child['id']} ({child['workflow']}) in step {child['step']}")
    print(f"  read from the {run['source']}, not Postgres")
    print(
        f"{'SEQ':>8}  {'TIME (stored)':15}  {'KIND':16}  {'BY':28}  {'STEP':16}  "
        f"{'ATT':>3}  {'DLV':>3}  WHAT"
    )


def who(actor: dict[str, Any] | None) -> str:
    if actor is None:
        return "?"
    if actor["role"] == WORKER:
        if actor.get("id") is None:
            return "worker"
        return f"worker {actor['name'] or '?'} ({actor['id']})"
    if actor["role"] == PUBLISHER:
        return "publisher (not recorded)"
    return str(actor["role"])


def show(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(e, default=str).decode(), flush=True)
        return
    when = e["time"][11:23] if e["time"] else "-"

    def num(v: Any) -> str:
        return "-" if v is None else str(v)

    print(
        f"{e['seq']:>8}  {when:15}  {e['kind']:16}  {who(e['actor']):28}  "
        f"{e['step'] or '-':16}  {num(e['attempt']):>3}  {num(e['delivery']):>3}  {e['summary']}",
        flush=True,
    )
    if e["error"]:
        first, *more = str(e["error"]).splitlines() or [""]
        print(f"{'':10}error: {first}", flush=True)
        for line in more:
            print(f"{'':17}{line}", flush=True)
    for line in (e["traceback"] or "").splitlines():
        print(f"{'':17}{line}", flush=True)
    for v in e.get("verdicts", []):
        if v["error"]:
            print(f"{'':10}{v['step']}: {v['error']}", flush=True)


def log_json(log: LogGuarantees) -> dict[str, Any]:
    """Where the history comes from, and what its stream's stored configuration promises."""
    return {
        "stream": log.stream,
        "append_only": log.append_only,
        "deny_delete": log.deny_delete,
        "deny_purge": log.deny_purge,
        "weaknesses": list(log.weaknesses),
    }


def log_line(log: LogGuarantees) -> str:
    """The last line of an audit: the log it read, append-only or not, as the server has it."""
    if log.append_only:
        return (
            f"history from the append-only log, stream {log.stream}: its stored configuration"
            " denies delete and purge (deny_delete, deny_purge) and allows no rollup or TTL"
        )
    return (
        f"history from stream {log.stream}, which is NOT append-only as stored:"
        f" {'; '.join(log.weaknesses)}"
    )


def print_run(run: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    print_header(run)
    for e in lines:
        show(e, False)
