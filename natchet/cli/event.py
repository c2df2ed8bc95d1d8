"""``natchet event push``: publish an event as the tenant's clients do, with its token."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from eventstore import Append, append
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.config import layered_env
from schemas import Scope
from schemas.errors import ConfigError
from schemas.metadata import check_metadata, metadata_headers


def add_parser(sub: Any) -> None:
    event = sub.add_parser("event", help="publish events")
    event_sub = event.add_subparsers(dest="event_command", required=True)
    ep = event_sub.add_parser("push", help="publish JSON on <tenant>.<namespace>.events.<key>")
    ep.add_argument("key", help="e.g. user:create")
    ep.add_argument("json", help="the event's body, a JSON document")
    ep.add_argument("--namespace", help="env HATCHET_CLIENT_NAMESPACE, default default")
    ep.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="additional metadata (a Natchet-Meta-KEY header), onto the runs it starts;"
        " repeat for several",
    )
    add_nats_flags(ep, role="tenant")
    ep.set_defaults(handler=push)


def parse_payload(text: str) -> bytes:
    try:
        return orjson.dumps(orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"the event body must be JSON: {exc}") from None


async def push(args: argparse.Namespace) -> int:
    env = layered_env()
    tenant = tenant_of(args, env)
    namespace = args.namespace or env.get("HATCHET_CLIENT_NAMESPACE") or "default"
    subject = Scope(tenant, namespace).event(args.key)
    body = parse_payload(args.json)
    pairs = [p.partition("=") for p in args.metadata or ()]
    if any(not sep or not key for key, sep, _v in pairs):
        raise ConfigError("--metadata takes KEY=VALUE")
    meta = check_metadata({key: value for key, _s, value in pairs}, "--metadata")
    async with open_nats(args, role="tenant", tenant=tenant) as nc:
        seq = await append(nc, Append(subject, body, headers=metadata_headers(meta)))
    print(f"published {subject} (event id {seq})")
    return 0
