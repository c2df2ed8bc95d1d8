"""``natchet dashboard`` (the web UI and its JSON API against the configured NATS and
Postgres) and ``natchet admin-token create`` (an operator credential to sign in to it with:
every tenant, and creating them)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from natchet.cli.connection import add_database_flag, add_nats_flags, open_nats, public_nats_url
from natchet.config import DEFAULT_DATA_DIR, EngineSettings, port_from

DEFAULT_PORT = 8780
DEFAULT_HOST = "127.0.0.1"


def add_parser(sub: Any) -> None:
    d = sub.add_parser("dashboard", help="serve the web dashboard and its JSON API")
    d.add_argument("--port", default=DEFAULT_PORT, help="default %(default)s; 0: a free one")
    d.add_argument("--host", default=DEFAULT_HOST, help="default %(default)s")
    d.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the session secret is kept unless NATCHET_DASHBOARD_SECRET is set"
        " (default: %(default)s)",
    )
    d.add_argument(
        "--secure-cookies", action="store_true", help="send the session cookie over HTTPS only"
    )
    add_nats_flags(d)
    add_database_flag(d)
    d.set_defaults(handler=dashboard_command, long_running=True)

    a = sub.add_parser("admin-token", help="operator credentials for the dashboard")
    asub = a.add_subparsers(dest="admin_token_command", required=True)
    ac = asub.add_parser("create", help="a new operator credential, shown once")
    ac.add_argument("--name", default="", help="who it is for")
    add_nats_flags(ac)
    ac.set_defaults(handler=admin_token_create)
    al = asub.add_parser("list", help="operator credentials (never their secrets)")
    al.add_argument("--json", action="store_true")
    add_nats_flags(al)
    al.set_defaults(handler=admin_token_list)
    ar = asub.add_parser("revoke", help="revoke an operator credential (its sessions end)")
    ar.add_argument("operator_id", metavar="ID")
    add_nats_flags(ar)
    ar.set_defaults(handler=admin_token_revoke)


def dashboard_settings(
    engine: EngineSettings, data_dir: Path, public_url: str | None = None
) -> Any:
    from natchet.dashboard.auth import session_secret
    from natchet.dashboard.backend import DashboardSettings

    return DashboardSettings(
        engine=engine,
        secret=session_secret(data_dir),
        public_nats_url=public_url or engine.nats_url,
    )


async def dashboard_command(args: argparse.Namespace) -> int:
    from natchet.dashboard.app import Dashboard

    port = port_from(args.port, "--port")
    engine = EngineSettings.resolve(nats_url=args.nats_url, database_url=args.database_url)
    if args.nats_auth_file:
        import attrs

        engine = attrs.evolve(engine, nats_auth_file=args.nats_auth_file)
    settings = dashboard_settings(engine, args.data_dir, public_nats_url(args))
    dashboard = Dashboard(settings, args.host, port or 0, secure_cookies=args.secure_cookies)
    await dashboard.start()
    try:
        print(
            f"natchet dashboard on {dashboard.url} (its API: {dashboard.url}/api/openapi.json)",
            flush=True,
        )
        await asyncio.Event().wait()  # until a signal cancels it
    finally:
        await dashboard.shutdown()
    return 0


async def admin_token_create(args: argparse.Namespace) -> int:
    from natchet.tenancy import admin

    async with open_nats(args, role="engine") as nc:
        operator_id, credential = await admin.create_operator(nc, name=args.name)
    print(f"operator credential {operator_id} (shown once, store it now):\n\n  {credential}\n")
    print("Sign in to the dashboard with it: it sees every tenant and may create them.")
    return 0


async def admin_token_list(args: argparse.Namespace) -> int:
    from natchet.cli.output import dump_json, table
    from natchet.tenancy import admin

    async with open_nats(args, role="engine") as nc:
        state = await admin.load_state(nc)
    rows = [
        {
            "id": op.operator_id,
            "name": op.name,
            "created_at": op.created_at,
            "revoked_at": state.operators_revoked.get(op.operator_id),
        }
        for op in state.operators.values()
    ]
    if args.json:
        dump_json(rows)
    else:
        table(rows)
    return 0


async def admin_token_revoke(args: argparse.Namespace) -> int:
    from natchet.tenancy import admin

    async with open_nats(args, role="engine") as nc:
        await admin.revoke_operator(nc, args.operator_id)
    print(f"operator credential {args.operator_id} revoked")
    return 0
