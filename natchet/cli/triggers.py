"""``natchet cron create|list|delete`` and ``natchet schedule create|list|delete``: crons
and scheduled runs, as a tenant's client asks for them (``eventstore.triggers``), so the
same grants apply as to the SDK. Errors are one line (a bad expression names the field)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import attrs
import orjson

from eventstore.cronexpr import iso
from eventstore.triggers import (
    create_cron,
    create_schedule,
    delete_cron,
    delete_schedule,
    list_crons,
    list_schedules,
)
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.cli.output import dump_json, table
from natchet.config import layered_env
from schemas import Scope
from schemas.errors import ConfigError

UPCOMING = 3  # next fire times ``cron list`` shows


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--namespace", help="env HATCHET_CLIENT_NAMESPACE, default default")
    sp.add_argument("--json", action="store_true", help="print JSON")
    add_nats_flags(sp, role="tenant")


def _input(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--input must be JSON: {exc}") from None


def add_parser(sub: Any) -> None:
    cron = sub.add_parser("cron", help="crons: run a workflow at each tick of an expression")
    cs = cron.add_subparsers(dest="cron_command", required=True)
    c = cs.add_parser("create", help="create (or replace) a cron")
    c.add_argument("workflow")
    c.add_argument("name", help="the cron's name (1-64 of A-Z a-z 0-9 _ -)")
    c.add_argument("expression", help="5 fields (m h dom mon dow), or 6 with seconds first")
    c.add_argument("--input", help="the runs' input, JSON")
    c.add_argument("--timezone", help="IANA name, e.g. Europe/Paris (default UTC)")
    _common(c)
    c.set_defaults(handler=cron_create)
    c = cs.add_parser("list", help="the crons, with their next fire times")
    _common(c)
    c.set_defaults(handler=cron_list)
    c = cs.add_parser("delete", help="delete a cron")
    c.add_argument("name")
    _common(c)
    c.set_defaults(handler=cron_delete)

    sched = sub.add_parser("schedule", help="scheduled runs: run a workflow once, at a time")
    ss = sched.add_subparsers(dest="schedule_command", required=True)
    s = ss.add_parser("create", help="schedule a run")
    s.add_argument("workflow")
    when = s.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="ISO 8601 with an offset, e.g. 2026-12-31T23:59:00Z")
    when.add_argument("--in", dest="in_s", type=float, help="seconds from now")
    s.add_argument("--input", help="the run's input, JSON")
    _common(s)
    s.set_defaults(handler=schedule_create)
    s = ss.add_parser("list", help="the scheduled runs, with their status")
    _common(s)
    s.set_defaults(handler=schedule_list)
    s = ss.add_parser("delete", help="delete a scheduled run before its time")
    s.add_argument("id")
    _common(s)
    s.set_defaults(handler=schedule_delete)


def _scope(args: argparse.Namespace) -> Scope:
    env = layered_env()
    return Scope(
        tenant_of(args, env), args.namespace or env.get("HATCHET_CLIENT_NAMESPACE") or "default"
    )


async def cron_create(args: argparse.Namespace) -> int:
    scope = _scope(args)
    payload = _input(args.input)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        view = await create_cron(
            nc, scope, args.workflow, args.name, args.expression, payload, args.timezone
        )
    if args.json:
        dump_json(attrs.asdict(view))
    else:
        print(f"cron {view.name} created: {view.workflow} at {view.expression!r}")
    return 0


async def cron_list(args: argparse.Namespace) -> int:
    scope = _scope(args)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        crons = await list_crons(nc, scope)
    now = dt.datetime.now(dt.UTC)
    rows = [{**attrs.asdict(c), "upcoming": c.upcoming(UPCOMING, now)} for c in crons]
    if args.json:
        dump_json(rows)
        return 0
    table(
        [
            {
                "name": r["name"],
                "workflow": r["workflow"],
                "expression": r["expression"],
                "timezone": r["timezone"] or "UTC",
                "next fires": ", ".join(r["upcoming"]),
                "last fire": r["last_fire"],
            }
            for r in rows
        ],
        empty="(no crons)",
    )
    return 0


async def cron_delete(args: argparse.Namespace) -> int:
    scope = _scope(args)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        await delete_cron(nc, scope, args.name)
    if args.json:
        dump_json({"deleted": args.name})
    else:
        print(f"cron {args.name} deleted")
    return 0


async def schedule_create(args: argparse.Namespace) -> int:
    scope = _scope(args)
    payload = _input(args.input)
    now = dt.datetime.now(dt.UTC)
    when: dt.datetime | str = args.at if args.at else now + dt.timedelta(seconds=args.in_s)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        view = await create_schedule(nc, scope, args.workflow, when, payload, now=now)
    if args.json:
        dump_json(attrs.asdict(view))
    else:
        print(f"scheduled run {view.id} created: {view.workflow} at {view.trigger_at}")
    return 0


async def schedule_list(args: argparse.Namespace) -> int:
    scope = _scope(args)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        views = await list_schedules(nc, scope)
    if args.json:
        dump_json([attrs.asdict(v) for v in views])
        return 0
    table(
        [
            {
                "id": v.id,
                "workflow": v.workflow,
                "trigger at": v.trigger_at,
                "status": v.status,
                "run": v.run_id or v.reason,
            }
            for v in views
        ],
        empty="(no scheduled runs)",
    )
    return 0


async def schedule_delete(args: argparse.Namespace) -> int:
    scope = _scope(args)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        await delete_schedule(nc, scope, args.id)
    if args.json:
        dump_json({"deleted": args.id, "at": iso(dt.datetime.now(dt.UTC))})
    else:
        print(f"scheduled run {args.id} deleted")
    return 0
