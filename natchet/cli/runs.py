"""``natchet runs list|get``, read from the projection in Postgres, and ``natchet runs
cancel``, which asks the engine through NATS (the log decides, not Postgres): one run, or
every run not yet ended that the filters select from Postgres (:mod:`natchet.cli.bulk`)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from eventstore import ConfigError, append
from natchet.audit import as_of, check_run_id
from natchet.cli.audit import read_run_or_say
from natchet.cli.bulk import (
    add_selection_flags,
    append_each,
    confirm,
    run_or_selection,
    select,
)
from natchet.cli.connection import (
    add_database_flag,
    add_nats_flags,
    database_url,
    open_database,
    open_nats,
    tenant_of,
)
from natchet.cli.output import add_page_flags, dump_json, note, say_if_truncated
from natchet.cli.rerun import add_runs_replay
from natchet.runops import cancel_request
from projector.queries import get_run, runs_page
from schemas import RunStatus, Scope


def add_parser(sub: Any) -> None:
    runs = sub.add_parser(
        "runs", help="runs: list, get (from Postgres), cancel and replay (through NATS)"
    )
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)

    rl = runs_sub.add_parser("list", help="runs, newest first")
    rl.add_argument("--json", action="store_true", help='{"runs": [...], "total": N, "next": ...}')
    rl.add_argument("--status")
    rl.add_argument("--workflow")
    rl.add_argument("--tenant", help="one tenant's runs (default: every tenant's)")
    rl.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="runs whose additional metadata has KEY set to VALUE (repeat: all of them)",
    )
    rl.add_argument(
        "--concurrency-key", metavar="KEY", help="runs of this concurrency key (any workflow's)"
    )
    add_page_flags(rl, "runs")
    add_database_flag(rl)
    rl.set_defaults(handler=runs_list)

    rg = runs_sub.add_parser("get", help="one run, its steps and their attempts")
    rg.add_argument("run_id")
    rg.add_argument("--json", action="store_true")
    rg.add_argument("--tenant", help="whose run (env HATCHET_CLIENT_TENANT_ID, default dev)")
    rg.add_argument(
        "--as-of",
        metavar="SEQ|TIME",
        help="the run as it stood once the log held message SEQ, or at TIME (ISO 8601, UTC"
        " unless given): folded from the log, not read from Postgres",
    )
    rg.add_argument("--namespace", help="with --as-of: the run's namespace, if in several")
    add_database_flag(rg)
    add_nats_flags(rg)
    rg.set_defaults(handler=runs_get)

    rc = runs_sub.add_parser(
        "cancel",
        help="cancel a run, or every run the filters select (through NATS)",
        description="Cancel RUN_ID, or the runs not yet ended that --status, --workflow and"
        " --since select (read from Postgres; counted and confirmed first, or --yes).",
    )
    rc.add_argument("run_id", nargs="?", metavar="RUN_ID")
    rc.add_argument("--reason")
    rc.add_argument(
        "--namespace", help="RUN_ID's namespace (default: default); with filters, only this one"
    )
    add_selection_flags(rc, verb="cancel")
    add_nats_flags(rc, role="log")
    rc.set_defaults(handler=runs_cancel)

    add_runs_replay(runs_sub)


async def runs_list(args: argparse.Namespace) -> int:
    async with open_database(database_url(args)) as conn:
        page = await runs_page(
            conn,
            tenant=args.tenant,
            status=args.status,
            workflow=args.workflow,
            metadata=parse_metadata(args.metadata),
            concurrency_key=args.concurrency_key,
            limit=args.limit,
            after=args.after,
        )
    if args.json:
        dump_json({"runs": page.rows, "total": page.total, "next": page.next})
        return 0
    if not page.rows:
        print("no runs")
    else:
        print(f"{'ID':36}  {'WORKFLOW':20}  {'STATUS':9}  CREATED")
        for run in page.rows:
            print(f"{run['id']:36}  {run['workflow']:20}  {run['status']:9}  {run['created_at']}")
    say_if_truncated(page, "runs")
    return 0


def parse_metadata(pairs: list[str] | None) -> dict[str, str] | None:
    """``--metadata KEY=VALUE`` flags as a dict (None: no flag)."""
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--metadata {pair!r}: write KEY=VALUE")
        out[key] = value
    return out


async def runs_get(args: argparse.Namespace) -> int:
    """Run ids are only unique within a tenant: ``--tenant`` (else the environment's) says
    whose run it is."""
    tenant = tenant_of(args)
    if args.as_of is not None:
        return await _run_as_of(args, tenant)
    async with open_database(database_url(args)) as conn:
        run = await get_run(conn, args.run_id, tenant=tenant)
    if run is None:
        note(
            f"natchet: no run {args.run_id} of tenant {tenant} in the projection"
            " (it may not be projected yet)"
        )
        return 1
    if args.json:
        dump_json(run)
        return 0
    print(f"run {run['id']}  {run['workflow']}  {run['status']}")
    if run.get("error"):
        print(f"  error: {run['error']}")
    if (parent := run.get("parent")) is not None:
        print(f"  parent: run {parent['run_id']} step {parent['step']} key {parent['key']}")
    print_concurrency(run)
    print_steps(run.get("steps", []))
    children = run.get("children", [])
    if children:
        print(f"  children ({len(children)}):")
    for child in children:
        print(f"    {child['id']}  {child['workflow']}  {child['status']}  step {child['step']}"
              f" key {child['key']}")  # fmt: skip
    return 0


def parse_as_of(text: str) -> tuple[int | None, dt.datetime | None]:
    """``--as-of``: a stream sequence (digits), or an ISO 8601 time (UTC if it names no
    zone)."""
    if text.isascii() and text.isdigit():  # isdigit alone takes "²", which int refuses
        return int(text), None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--as-of {text!r} is neither a sequence number nor an ISO 8601 time"
            " (e.g. 2026-12-01T18:00:00Z)"
        ) from None
    return None, when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


async def _run_as_of(args: argparse.Namespace, tenant: str) -> int:
    seq, when = parse_as_of(args.as_of)
    run_id = check_run_id(args.run_id)
    async with open_nats(args, role="log", tenant=tenant) as nc:
        found = await read_run_or_say(nc, tenant, run_id, args.namespace)
    if found is None:
        return 1
    view = as_of(tenant, run_id, [r for r, _m in found[1]], seq=seq, time=when)
    if view is None:
        note(f"natchet: run {run_id} did not exist yet at {args.as_of}")
        return 1
    if args.json:
        dump_json(view)
        return 0
    run = view["run"]
    print(f"run {run['id']}  {run['workflow']}  {run['status']}  as of seq {view['as_of']['seq']}")
    if run.get("error"):
        print(f"  error: {run['error']}")
    print_concurrency(run)
    print_steps(view["steps"])
    return 0


def print_concurrency(run: dict[str, Any]) -> None:
    """A run's concurrency key, and what holds it while it waits for its key."""
    if run.get("priority") is not None:
        print(f"  priority: {run['priority']}")
    if run.get("concurrency_key") is not None:
        print(f"  concurrency key: {run['concurrency_key']!r}")
    if run.get("waiting_for"):
        print(f"  waiting for {run['waiting_for']}")


def print_steps(steps: list[dict[str, Any]]) -> None:
    """Each step's line; a WAITING step's conditions, and a durable step's waits, under it."""
    for step in steps:
        print(f"  {step['name']:20} {step['status'] or '-':9} attempts={len(step['attempts'])}")
        if step.get("waiting_for"):
            print(f"    waiting for {step['waiting_for']}")
        for wait in step.get("waits", []):
            print("    " + wait_line(wait))


def wait_line(wait: dict[str, Any]) -> str:
    """One wait of a durable step: what it waited for, since when, and what woke it."""
    index = wait.get("index", wait.get("wait_index"))
    line = (
        f"wait {index} (attempt {wait['attempt']}, delivery {wait['delivery']})"
        f" at {_when(wait['waited_at'])}: {wait['waiting_for']}; "
    )
    if wait["woken_at"] is None:
        return line + "still waiting"
    line += f"woken at {_when(wait['woken_at'])} by condition {wait['condition']}"
    if wait["kind"] == "event":
        return line + f" (event {wait['event_id']}, {wait['event_key']})"
    return line + " (sleep)"


def _when(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


async def runs_cancel(args: argparse.Namespace) -> int:
    tenant = tenant_of(args)
    selection = run_or_selection(args, tenant)
    if selection is None:
        return await _cancel_one(args, Scope(tenant, args.namespace or "default"))
    if selection.status is not None and RunStatus(selection.status).terminal:
        print(f"{selection.status} runs have ended: cancelling them changes nothing")
        return 0
    among = [s.value for s in RunStatus if not s.terminal]
    runs = await select(args, selection, among=among)
    if not confirm(len(runs), selection.describe(among), verb="Cancel", yes=args.yes):
        return 0
    return await append_each(
        args,
        tenant,
        runs,
        lambda r: cancel_request(Scope(tenant, r.namespace), r.id, args.reason),
        did="cancel requested for",
    )


async def _cancel_one(args: argparse.Namespace, scope: Scope) -> int:
    request = cancel_request(scope, args.run_id, args.reason)
    async with open_nats(args, role="log", tenant=scope.tenant) as nc:
        await append(nc, request)
    print(f"cancel requested for run {args.run_id}; `natchet runs get {args.run_id}` shows it")
    return 0
