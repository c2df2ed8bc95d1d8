"""``natchet tenant ...``, ``natchet token ...`` and ``natchet nats-config``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eventstore import ConfigError, NatsOptions, connect
from natchet.config import layered_env
from schemas.tenancy import inbox_prefix, parse_token

COMMANDS = ("tenant", "token", "nats-config")


def add_parsers(sub: Any) -> None:
    def servers(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--nats-url", help="engine NATS URL (env NATCHET_NATS_URL)")
        sp.add_argument("--nats-auth-file", help="engine credentials (env NATCHET_NATS_AUTH_FILE)")

    tenant = sub.add_parser("tenant", help="tenants: create, list")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    tc = tsub.add_parser("create", help="create a tenant, its stream and an admin token")
    tc.add_argument("name")
    tc.add_argument("--max-bytes", type=int, default=-1, help="stream size limit (-1: none)")
    tc.add_argument("--json", action="store_true")
    servers(tc)
    tl = tsub.add_parser("list")
    tl.add_argument("--json", action="store_true")
    servers(tl)

    token = sub.add_parser("token", help="tokens: create, list, revoke, nats-context")
    ksub = token.add_subparsers(dest="token_command", required=True)
    kc = ksub.add_parser("create")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--name", default="")
    kc.add_argument("--expires", help="e.g. 30m, 12h, 7d")
    kc.add_argument("--json", action="store_true")
    servers(kc)
    kl = ksub.add_parser("list")
    kl.add_argument("--json", action="store_true")
    servers(kl)
    kr = ksub.add_parser("revoke")
    kr.add_argument("token_id")
    servers(kr)
    kn = ksub.add_parser("nats-context", help="how to use the `nats` CLI with a token")
    kn.add_argument("token")
    kn.add_argument("--json", action="store_true", help="a `nats context` JSON document")
    kn.add_argument("--ca", help="CA file, for a TLS server")

    conf = sub.add_parser("nats-config", help="write a nats-server config for tenancy")
    conf.add_argument("directory", type=Path)
    conf.add_argument("--tls", action="store_true", help="also generate a local CA and certs")


def engine_options(args: argparse.Namespace) -> tuple[NatsOptions, str]:
    env = layered_env()
    url = args.nats_url or env.get("NATCHET_NATS_URL")
    if not url:
        raise ConfigError("no NATS address: pass --nats-url or run `natchet dev` here")
    auth_file = args.nats_auth_file or env.get("NATCHET_NATS_AUTH_FILE")
    public = env.get("NATCHET_PUBLIC_NATS_URL") or url
    if auth_file:
        from natchet.tenancy.serverconf import NatsAuth

        return NatsAuth.load(Path(auth_file)).options(url, "natchet-cli", "engine"), public
    return NatsOptions(url=url, name="natchet-cli"), public


async def run(args: argparse.Namespace) -> int:
    if args.command == "nats-config":
        return _nats_config(args)
    if args.command == "token" and args.token_command == "nats-context":
        print(nats_context(args.token, ca=args.ca, as_json=args.json))
        return 0
    from natchet.tenancy import admin

    options, public_url = engine_options(args)
    nc = await connect(options)
    try:
        match (args.command, getattr(args, "tenant_command", None)):
            case ("tenant", "create"):
                await admin.create_tenant(nc, args.name, max_bytes=args.max_bytes)
                issued = await admin.create_token(nc, args.name, public_url, name="admin")
                _show_token(issued, args.json, f"tenant {args.name} created")
            case ("tenant", "list"):
                state = await admin.load_state(nc)
                rows = [
                    {
                        "tenant": t.tenant,
                        "max_bytes": t.max_bytes,
                        "created_at": t.created_at,
                        "tokens": sum(
                            1
                            for r in state.tokens.values()
                            if r.tenant == t.tenant and r.revoked_at is None
                        ),
                    }
                    for t in state.tenants.values()
                ]
                _table(rows, args.json)
            case ("token", _):
                await _token(nc, args, public_url)
    finally:
        await nc.drain()
    return 0


async def _token(nc: Any, args: argparse.Namespace, public_url: str) -> None:
    from natchet.tenancy import admin

    if args.token_command == "create":
        expires = admin.parse_duration(args.expires) if args.expires else None
        issued = await admin.create_token(
            nc, args.tenant, public_url, name=args.name, expires_in=expires
        )
        _show_token(issued, args.json, f"token {issued.token_id} for tenant {args.tenant}")
    elif args.token_command == "list":
        state = await admin.load_state(nc)
        rows = [
            {
                "id": r.token_id,
                "tenant": r.tenant,
                "name": r.name,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "revoked_at": r.revoked_at,
            }
            for r in state.tokens.values()
        ]
        _table(rows, args.json)
    else:
        await admin.revoke_token(nc, args.token_id)
        print(f"token {args.token_id} revoked")


def _show_token(issued: Any, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps({"tenant": issued.tenant, "id": issued.token_id, "token": issued.token}))
        return
    print(f"{what}. Its token (shown once, store it now):\n\n  {issued.token}\n")
    print(f"A worker needs only:  export HATCHET_CLIENT_TOKEN={issued.token}")


def _table(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(none)")
        return
    cols = list(rows[0])
    widths = {
        c: max(len(c), *(len(str(r[c] if r[c] is not None else "-")) for r in rows)) for c in cols
    }
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c] if r[c] is not None else "-").ljust(widths[c]) for c in cols))


def nats_context(token: str, *, ca: str | None = None, as_json: bool = False) -> str:
    """The `nats` CLI invocation (or context document) that acts as the token's tenant."""
    parsed = parse_token(token)
    if as_json:
        context: dict[str, Any] = {
            "description": f"natchet tenant {parsed.tenant}",
            "url": parsed.url,
            "token": token,
            "inbox_prefix": inbox_prefix(parsed.tenant),
        }
        if ca:
            context["ca"] = ca
        return json.dumps(context, indent=2)
    tls = f" --tlsca {ca}" if ca else ""
    base = (
        f"nats --server {parsed.url} --token '{token}' "
        f"--inbox-prefix {inbox_prefix(parsed.tenant)}{tls}"
    )
    return (
        f"# publish an event as tenant {parsed.tenant} "
        "(subject <tenant>.<namespace>.events.<key>)\n"
        f"{base} pub {parsed.tenant}.default.events.user:create '{{\"id\": 1}}'\n"
        f"# or save it as a context:  natchet token nats-context TOKEN --json > "
        f"~/.config/nats/context/{parsed.tenant}.json && nats context select {parsed.tenant}"
    )


def _nats_config(args: argparse.Namespace) -> int:
    from natchet.tenancy.serverconf import AUTH_FILE, NatsAuth, write_server_files

    tls = None
    if args.tls:
        from natchet.tenancy.tlsgen import generate_tls

        tls = generate_tls(args.directory / "tls")
    auth = NatsAuth.generate(tls)
    config = write_server_files(args.directory, auth)
    print(f"wrote {config} and {args.directory / AUTH_FILE}")
    print(f"run:  nats-server -js -c {config}")
    print(
        f"then: NATCHET_NATS_AUTH_FILE={args.directory / AUTH_FILE} natchet dev --nats-url "
        "nats://HOST:PORT"
    )
    return 0
