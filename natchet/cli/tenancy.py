"""``natchet tenant ...``, ``natchet token ...`` (through NATS, as the engine: tenants and
tokens are records in the engine's own log) and ``natchet nats-config`` (files only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eventstore import Connection
from natchet.cli.connection import add_nats_flags, log_account, open_nats, public_nats_url
from natchet.cli.output import dump_json, table
from natchet.config import write_env_file
from schemas.tenancy import inbox_prefix, parse_token


def add_parser(sub: Any) -> None:
    tenant = sub.add_parser("tenant", help="tenants: create, list")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    tc = tsub.add_parser("create", help="create a tenant (its accounts, its log) and a token")
    tc.add_argument("name")
    tc.add_argument(
        "--max-bytes", type=int, default=-1, help="log quota; a full log refuses (-1: none)"
    )
    tc.add_argument("--max-connections", type=int, default=-1, help="-1: no limit")
    tc.add_argument("--max-consumers", type=int, default=-1, help="queue groups; -1: no limit")
    tc.add_argument("--json", action="store_true")
    tc.add_argument("--env-file", type=Path, help="also write HATCHET_CLIENT_TOKEN=... here")
    add_nats_flags(tc)
    tl = tsub.add_parser("list")
    tl.add_argument("--json", action="store_true")
    add_nats_flags(tl)
    tm = tsub.add_parser("limits", help="change a tenant's limits (the others stay)")
    tm.add_argument("name")
    tm.add_argument("--max-bytes", type=int, help="log quota (-1: none)")
    tm.add_argument("--max-connections", type=int)
    tm.add_argument("--max-consumers", type=int)
    add_nats_flags(tm)

    token = sub.add_parser("token", help="tokens: create, list, revoke, nats-context")
    ksub = token.add_subparsers(dest="token_command", required=True)
    kc = ksub.add_parser("create")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--name", default="")
    kc.add_argument("--expires", help="e.g. 30m, 12h, 7d")
    kc.add_argument("--json", action="store_true")
    kc.add_argument("--env-file", type=Path, help="also write HATCHET_CLIENT_TOKEN=... here")
    add_nats_flags(kc)
    kl = ksub.add_parser("list")
    kl.add_argument("--json", action="store_true")
    add_nats_flags(kl)
    kr = ksub.add_parser("revoke")
    kr.add_argument("token_id")
    add_nats_flags(kr)
    kn = ksub.add_parser("nats-context", help="how to use the `nats` CLI with a token")
    kn.add_argument("token")
    kn.add_argument("--json", action="store_true", help="a `nats context` JSON document")
    kn.add_argument("--ca", help="CA file, for a TLS server")

    conf = sub.add_parser("nats-config", help="write a nats-server config for tenancy")
    conf.add_argument("directory", type=Path)
    conf.add_argument("--tls", action="store_true", help="also generate a local CA and certs")
    conf.add_argument(
        "--resolver-dir", type=Path, help="where the server keeps accounts (default DIR/jwt)"
    )
    conf.add_argument(
        "--if-missing", action="store_true", help="keep an existing config and keys as they are"
    )
    for sp in (tenant, token, conf):
        sp.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    if args.command == "nats-config":
        return _nats_config(args)
    if args.command == "token" and args.token_command == "nats-context":
        print(nats_context(args.token, ca=args.ca, as_json=args.json))
        return 0

    public_url = public_nats_url(args)
    async with open_nats(args, role="engine") as nc:
        if args.command == "token":
            await _token(nc, args, public_url)
        else:
            await _tenant(nc, args, public_url)
    return 0


async def _tenant(nc: Connection, args: argparse.Namespace, public_url: str) -> None:
    from natchet.tenancy import admin

    match args.tenant_command:
        case "create":
            created = await admin.create_tenant(
                nc,
                args.name,
                max_bytes=args.max_bytes,
                max_connections=args.max_connections,
                max_consumers=args.max_consumers,
            )
            what = f"tenant {args.name} {'created' if created else 'already exists'}"
            issued = await admin.create_token(nc, args.name, public_url, name="admin")
            _show_token(issued, args.json, what, args.env_file)
        case "list":
            state = await admin.load_state(nc)
            rows = [
                {
                    "tenant": t.tenant,
                    "max_bytes": t.max_bytes,
                    "max_connections": t.max_connections,
                    "max_consumers": t.max_consumers,
                    "log_full_since": state.full.get(t.tenant),
                    "created_at": t.created_at,
                    "tokens": sum(
                        1
                        for r in state.tokens.values()
                        if r.tenant == t.tenant and r.revoked_at is None
                    ),
                    # Where autoscalers find its queues (/jsz?acc=...; KEDA's account).
                    "nats_account": log_account(args, t.tenant),
                }
                for t in state.tenants.values()
            ]
            _table(rows, args.json)
        case "limits":
            tenant = await admin.set_limits(
                nc,
                args.name,
                max_bytes=args.max_bytes,
                max_connections=args.max_connections,
                max_consumers=args.max_consumers,
            )
            print(
                f"tenant {tenant.tenant}: max_bytes {tenant.max_bytes}, max_connections "
                f"{tenant.max_connections}, max_consumers {tenant.max_consumers} (the "
                "engine applies them now)"
            )


async def _token(nc: Connection, args: argparse.Namespace, public_url: str) -> None:
    from natchet.tenancy import admin

    if args.token_command == "create":
        expires = admin.parse_duration(args.expires) if args.expires else None
        issued = await admin.create_token(
            nc, args.tenant, public_url, name=args.name, expires_in=expires
        )
        what = f"token {issued.token_id} for tenant {args.tenant}"
        _show_token(issued, args.json, what, args.env_file)
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


def _show_token(issued: Any, as_json: bool, what: str, env_file: Path | None = None) -> None:
    if env_file is not None:
        write_env_file(env_file, {"HATCHET_CLIENT_TOKEN": issued.token})
        env_file.chmod(0o600)
    if as_json:
        print(json.dumps({"tenant": issued.tenant, "id": issued.token_id, "token": issued.token}))
        return
    if env_file is not None:
        print(f"{what}. Its token is in {env_file} (HATCHET_CLIENT_TOKEN).")
        return
    print(f"{what}. Its token (shown once, store it now):\n\n  {issued.token}\n")
    print(f"A worker needs only:  export HATCHET_CLIENT_TOKEN={issued.token}")


def _table(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        dump_json(rows)
    else:
        table(rows)


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
    from natchet.tenancy.serverconf import AUTH_FILE, CONFIG_FILE, NatsAuth, write_server_files

    auth_file, config = args.directory / AUTH_FILE, args.directory / CONFIG_FILE
    if args.if_missing and auth_file.exists() and config.exists():
        print(f"{config} and {auth_file} exist: kept as they are")
        return 0
    tls = None
    if args.tls:
        from natchet.tenancy.tlsgen import generate_tls

        tls = generate_tls(args.directory / "tls")
    auth = NatsAuth.generate(tls)
    config = write_server_files(args.directory, auth, resolver_dir=args.resolver_dir)
    print(f"wrote {config} and {auth_file} (keep the second secret: it can act as any tenant)")
    print(f"run:  nats-server -js -c {config}")
    print(f"then: NATCHET_NATS_AUTH_FILE={auth_file} natchet engine --nats-url nats://HOST:PORT")
    return 0
