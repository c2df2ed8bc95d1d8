"""``natchet events list``: the events the engine received, read from the projection."""

from __future__ import annotations

import argparse
from typing import Any

from natchet.cli.connection import add_database_flag, database_url, open_database
from natchet.cli.output import add_page_flags, dump_json, say_if_truncated
from natchet.cli.rerun import add_events_replay
from projector.queries import events_page


def add_parser(sub: Any) -> None:
    events = sub.add_parser("events", help="events: list (from Postgres), replay (through NATS)")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    el = events_sub.add_parser("list", help="events, newest first")
    el.add_argument(
        "--json", action="store_true", help='{"events": [...], "total": N, "next": ...}'
    )
    el.add_argument("--tenant", help="one tenant's events (default: every tenant's)")
    add_page_flags(el, "events")
    add_database_flag(el)
    el.set_defaults(handler=events_list)
    add_events_replay(events_sub)


async def events_list(args: argparse.Namespace) -> int:
    async with open_database(database_url(args)) as conn:
        page = await events_page(conn, tenant=args.tenant, limit=args.limit, after=args.after)
    if args.json:
        dump_json({"events": page.rows, "total": page.total, "next": page.next})
        return 0
    if not page.rows:
        print("no events")
    for e in page.rows:
        print(f"{e['seq']:>8}  {e['key']:30}  {'ok' if e['valid'] else 'NOT JSON'}")
    say_if_truncated(page, "events")
    return 0
