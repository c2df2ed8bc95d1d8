"""``natchet ratelimits put|list``: static rate limits (docs/flow-control.md), set in the
tenant's log as ``hatchet.rate_limits.put`` sets them."""

from __future__ import annotations

import argparse
from typing import Any

import attrs

from eventstore.ratelimits import list_rate_limits, put_rate_limit, rate_limit_set
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.cli.output import dump_json
from natchet.config import layered_env
from schemas import Scope
from schemas.ratelimits import RateLimitDuration


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--namespace", help="env HATCHET_CLIENT_NAMESPACE, default default")
    sp.add_argument("--json", action="store_true", help="print JSON")
    add_nats_flags(sp, role="tenant")


def add_parser(sub: Any) -> None:
    rl = sub.add_parser("ratelimits", help="static rate limits: units per window, all workers")
    rs = rl.add_subparsers(dest="ratelimits_command", required=True)
    p = rs.add_parser("put", help="set (or change) a static rate limit")
    p.add_argument("key", help="the limit's key (1-64 of A-Z a-z 0-9 _ -)")
    p.add_argument("limit", type=int, help="units per window")
    p.add_argument("duration", help=f"the window: {', '.join(RateLimitDuration)}")
    _common(p)
    p.set_defaults(handler=ratelimits_put)
    p = rs.add_parser("list", help="the static rate limits set, by key")
    _common(p)
    p.set_defaults(handler=ratelimits_list)


def _scope(args: argparse.Namespace) -> Scope:
    env = layered_env()
    return Scope(
        tenant_of(args, env), args.namespace or env.get("HATCHET_CLIENT_NAMESPACE") or "default"
    )


async def ratelimits_put(args: argparse.Namespace) -> int:
    scope = _scope(args)
    rate_limit_set(args.key, args.limit, args.duration)  # bad input: one line, no connection
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        m = await put_rate_limit(nc, scope, args.key, args.limit, args.duration)
    if args.json:
        dump_json(attrs.asdict(m))
    else:
        print(f"rate limit {m.key!r}: {m.limit} units per {m.duration}")
    return 0


async def ratelimits_list(args: argparse.Namespace) -> int:
    scope = _scope(args)
    async with open_nats(args, role="tenant", tenant=scope.tenant) as nc:
        limits = await list_rate_limits(nc, scope)
    if args.json:
        dump_json([attrs.asdict(m) for m in limits])
    elif not limits:
        print("no rate limits set")
    for m in [] if args.json else limits:
        print(f"{m.key:24} {m.limit} per {m.duration}  (set {m.at})")
    return 0
