"""The ``natchet`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from eventstore import NatchetError, NatsOptions
from natchet.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_TENANT,
    EngineSettings,
    layered_env,
    resolve_tenant,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="natchet", description="a durable task engine on NATS")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def servers(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--nats-url", help="NATS server (env NATCHET_NATS_URL)")
        sp.add_argument("--database-url", help="PostgreSQL URL (env NATCHET_DATABASE_URL)")

    dev = sub.add_parser("dev", help="embedded NATS + Postgres + engine, until Ctrl-C")
    servers(dev)
    dev.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    dev.add_argument("--env-file", type=Path, help="also write the worker env here")
    dev.add_argument("--tenant", default=DEFAULT_TENANT)
    dev.add_argument("--tls", action="store_true", help="NATS with TLS (a generated local CA)")
    dev.add_argument(
        "--nats-auth-file", help="with --nats-url: engine credentials from `natchet nats-config`"
    )

    engine = sub.add_parser("engine", help="dispatcher + projector against configured servers")
    servers(engine)
    engine.add_argument("--tenants", help="comma-separated (env NATCHET_TENANTS, default dev)")

    demo = sub.add_parser("demo", help="the whole path on an embedded stack, then exit")
    demo.add_argument("--events", type=int, default=10)

    _add_inspection(sub)

    event = sub.add_parser("event", help="publish events")
    event_sub = event.add_subparsers(dest="event_command", required=True)
    ep = event_sub.add_parser("push", help="publish JSON on <tenant>.<namespace>.events.<key>")
    ep.add_argument("key")
    ep.add_argument("json")
    ep.add_argument("--nats-url")
    ep.add_argument("--tenant")
    ep.add_argument("--namespace")

    from natchet.tenancy import cli as tenancy_cli

    tenancy_cli.add_parsers(sub)
    return p


def _nats_arguments(sp: argparse.ArgumentParser) -> None:
    """For commands that go through NATS as the engine (see natchet.tenancy.cli)."""
    sp.add_argument("--tenant")
    sp.add_argument("--nats-url")
    sp.add_argument("--nats-auth-file")


def _add_inspection(sub: Any) -> None:
    """runs, workers and events: reading what happened."""
    runs = sub.add_parser("runs", help="runs, read from Postgres")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    rl = runs_sub.add_parser("list")
    rl.add_argument("--json", action="store_true")
    rl.add_argument("--status")
    rl.add_argument("--workflow")
    rl.add_argument("--tenant")
    rl.add_argument("--limit", type=int, default=100)
    rl.add_argument("--database-url")
    rc = runs_sub.add_parser("cancel", help="cancel a run (through NATS)")
    rc.add_argument("run_id")
    rc.add_argument("--reason")
    rc.add_argument("--namespace", default="default")
    _nats_arguments(rc)

    workers = sub.add_parser("workers", help="worker liveness, from heartbeats in NATS")
    workers_sub = workers.add_subparsers(dest="workers_command", required=True)
    wl = workers_sub.add_parser("list")
    wl.add_argument("--json", action="store_true")
    _nats_arguments(wl)

    rg = runs_sub.add_parser("get")
    rg.add_argument("run_id")
    rg.add_argument("--json", action="store_true")
    rg.add_argument("--database-url")

    events = sub.add_parser("events", help="events, read from Postgres")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    el = events_sub.add_parser("list")
    el.add_argument("--json", action="store_true")
    el.add_argument("--tenant")
    el.add_argument("--limit", type=int, default=100)
    el.add_argument("--database-url")


def _database_url(flag: str | None) -> str:
    env = layered_env()
    url = flag or env.get("NATCHET_DATABASE_URL")
    if not url:
        raise NatchetError(
            "NATCHET_DATABASE_URL is not set: pass --database-url, export it, or run "
            "`natchet dev` in this directory"
        )
    return url


def _command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from natchet import inspect, serve
    from natchet.tenancy import cli as tenancy_cli

    match args.command:
        case command if command in tenancy_cli.COMMANDS:
            return tenancy_cli.run(args)
        case "dev":
            return serve.serve_dev(
                args.data_dir,
                nats_url=args.nats_url,
                database_url=args.database_url,
                tenant=args.tenant,
                env_file=args.env_file,
                tls=args.tls,
                nats_auth_file=args.nats_auth_file or os.environ.get("NATCHET_NATS_AUTH_FILE"),
            )
        case "engine":
            settings = EngineSettings.resolve(
                nats_url=args.nats_url, database_url=args.database_url, tenants=args.tenants
            )
            return serve.serve_engine(settings)
        case "demo":
            from natchet.demo import run_demo

            return run_demo(args.events)
        case "runs" if args.runs_command == "cancel":
            from natchet.operate import runs_cancel

            return runs_cancel(args)
        case "workers":
            from natchet.operate import workers_list

            return workers_list(args)
        case "runs" if args.runs_command == "list":
            return inspect.runs_list(
                _database_url(args.database_url),
                as_json=args.json,
                status=args.status,
                workflow=args.workflow,
                tenant=args.tenant,
                limit=args.limit,
            )
        case "runs":
            return inspect.runs_get(
                _database_url(args.database_url), args.run_id, as_json=args.json
            )
        case "events":
            return inspect.events_list(
                _database_url(args.database_url),
                as_json=args.json,
                tenant=args.tenant,
                limit=args.limit,
            )
        case _:
            return _push(args)


async def _push(args: argparse.Namespace) -> int:
    from natchet.publish import push_event
    from schemas.tenancy import TOKEN_PREFIX, inbox_prefix, parse_token

    env = layered_env()
    url = args.nats_url or env.get("NATCHET_NATS_URL") or env.get("HATCHET_CLIENT_HOST_PORT")
    if not url:
        raise NatchetError("no NATS address: pass --nats-url or run `natchet dev` here")
    token = env.get("HATCHET_CLIENT_TOKEN") or None
    issued = parse_token(token) if token and token.startswith(TOKEN_PREFIX) else None
    tenant = resolve_tenant(args.tenant, env, issued.tenant if issued else DEFAULT_TENANT)
    namespace = args.namespace or env.get("HATCHET_CLIENT_NAMESPACE") or "default"
    options = NatsOptions(
        url=url, name="natchet-cli", token=token, inbox_prefix=inbox_prefix(tenant)
    )
    print(await push_event(options, tenant, namespace, args.key, args.json))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_command(args))
    except NatchetError as exc:
        print(f"natchet: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
