"""``natchet dev``, ``natchet engine`` and ``natchet demo``: the long-running entry points,
and the one place natchet handles SIGINT and SIGTERM.

A signal cancels the command's task, at whatever point it is, start-up included; the
command's ``finally`` blocks then stop what it started (the engine, then the servers) and the
command exits 0. Signals that arrive while it stops are logged and otherwise ignored, so a
second Ctrl-C cannot leave a server behind by interrupting the clean-up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import attrs

from natchet.cli.connection import add_database_flag
from natchet.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_TENANT,
    MAX_PARTITIONS,
    MAX_REPLICAS,
    ROLES,
    EngineSettings,
    partitions_from,
    port_from,
)
from schemas.errors import ConfigError

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_parser(sub: Any) -> None:
    dev = sub.add_parser("dev", help="embedded NATS + Postgres + engine, until Ctrl-C")
    dev.add_argument("--nats-url", help="use this NATS server instead of starting one")
    add_database_flag(dev)
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the servers' data, one dev stack at a time (default: %(default)s)",
    )
    dev.add_argument("--env-file", type=Path, help="also write the worker env here")
    dev.add_argument("--tenant", default=DEFAULT_TENANT)
    dev.add_argument("--tls", action="store_true", help="NATS with TLS (a generated local CA)")
    dev.add_argument(
        "--nats-auth-file", help="with --nats-url: engine credentials from `natchet nats-config`"
    )
    dev.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics, /live and /ready on this port (default: a free one, printed)",
    )
    dev.add_argument(
        "--dashboard-port",
        type=int,
        default=0,
        help="serve the dashboard on this port of 127.0.0.1 (default: a free one, printed)",
    )
    dev.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    dev.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="run NATS as a cluster of N nodes on this machine, every stream with N "
        "replicas (docs/scaling.md; default: one server)",
    )
    dev.add_argument(
        "--dispatch-partitions",
        type=int,
        metavar="N",
        help=f"split each tenant's dispatch into N partitions, 1 to {MAX_PARTITIONS} "
        "(docs/scaling.md; default 1, or what the tenant already has)",
    )
    dev.set_defaults(handler=serve_dev, long_running=True)

    engine = sub.add_parser("engine", help="dispatcher + projector against configured servers")
    engine.add_argument("--nats-url", help="NATS server (env NATCHET_NATS_URL)")
    add_database_flag(engine)
    engine.add_argument("--tenants", help="comma-separated (env NATCHET_TENANTS, default dev)")
    engine.add_argument(
        "--role",
        choices=ROLES,
        help="what this process runs: `dispatch`, `project` or `all` (default: the "
        "dispatcher here and the projector in a second process it starts and watches)",
    )
    engine.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics, /live and /ready on this port, 0 for any free one "
        "(env NATCHET_METRICS_PORT; default: not served)",
    )
    engine.add_argument(
        "--metrics-host",
        help="the address to serve them on (env NATCHET_METRICS_HOST, default 0.0.0.0)",
    )
    engine.add_argument(
        "--ready-max-lag",
        type=float,
        metavar="SECONDS",
        help="/ready fails when the dispatcher or projector is further behind the log "
        "(env NATCHET_READY_MAX_LAG_S, default 30)",
    )
    engine.add_argument(
        "--dashboard-port",
        type=int,
        help="also serve the dashboard on this port (env NATCHET_DASHBOARD_PORT; default: not"
        " served); its session secret: NATCHET_DASHBOARD_SECRET or .natchet/dashboard.secret",
    )
    engine.add_argument(
        "--dashboard-host",
        help="the dashboard's address (env NATCHET_DASHBOARD_HOST, default 127.0.0.1)",
    )
    engine.add_argument(
        "--replicas",
        type=int,
        help="copies of each stream the engine creates, on a NATS cluster: 1 to 5 (env "
        "NATCHET_STREAM_REPLICAS, default 1; existing streams are scaled up, never down)",
    )
    engine.add_argument(
        "--dispatch-partitions",
        type=int,
        metavar="N",
        help=f"split each tenant's dispatch into N partitions, 1 to {MAX_PARTITIONS}, each "
        "leased on its own (env NATCHET_DISPATCH_PARTITIONS, default 1; with leases, the "
        "first engine's count is recorded per tenant and every engine uses it)",
    )
    # The projector process natchet engine starts: stop when the parent (stdin) is gone.
    engine.add_argument("--with-parent", action="store_true", help=argparse.SUPPRESS)
    engine.set_defaults(handler=serve_engine, long_running=True)

    demo = sub.add_parser("demo", help="the whole path on an embedded stack, then exit")
    demo.add_argument("--events", type=int, default=10)
    demo.set_defaults(handler=demo_command, long_running=True)


async def until_signal(command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``; the first SIGINT or SIGTERM cancels it (exit 0 once it has stopped)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(command)
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.warning("%s: already stopping (after %s)", sig.name, received[0].name)
            return
        received.append(sig)
        log.info("%s: stopping", sig.name)
        task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        return 0
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


async def serve_engine(args: argparse.Namespace) -> int:
    from natchet.engine import Engine
    from natchet.projector_process import ProjectorProcess, until_stdin_closes

    settings = EngineSettings.resolve(
        nats_url=args.nats_url,
        database_url=args.database_url,
        tenants=args.tenants,
        role=args.role or "dispatch",
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        ready_max_lag_s=args.ready_max_lag,
        stream_replicas=args.replicas,
        dispatch_partitions=args.dispatch_partitions,
    )
    if args.with_parent:  # the parent serves the metrics (and the port is its own)
        settings = attrs.evolve(settings, metrics_port=None)
    child = None if args.role else ProjectorProcess(_projector_argv(args))
    dashboard = None if args.with_parent else _engine_dashboard(args, settings)
    # The parent answers for its child's projector: its lag is read from Postgres.
    engine = Engine(settings, watch_projector=True if child is not None else None)
    try:
        await engine.start()
        if engine.health is not None:
            print(f"natchet engine: metrics on {engine.health.url}/metrics", flush=True)
        if child is not None:
            child.start()
        if dashboard is not None:
            await dashboard.start()
            print(f"natchet engine: dashboard on {dashboard.url}", flush=True)
        if args.with_parent:
            await until_stdin_closes()
            log.info("engine (%s): the parent process is gone; stopping", settings.role)
        else:
            await asyncio.Event().wait()  # until a signal cancels it
    finally:
        if dashboard is not None:
            await dashboard.shutdown()
        # At once: each hands its leases back as it stops (docs/scaling.md), and the
        # projector's handover need not wait for the dispatcher's.
        stops = [engine.shutdown(), *([] if child is None else [child.shutdown()])]
        for result in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
    return 0


def _engine_dashboard(args: argparse.Namespace, settings: EngineSettings) -> Any:
    """The dashboard ``--dashboard-port`` (or NATCHET_DASHBOARD_PORT) asks for, or None."""
    from natchet.config import layered_env

    env = layered_env()
    port = port_from(
        args.dashboard_port
        if args.dashboard_port is not None
        else env.get("NATCHET_DASHBOARD_PORT"),
        "--dashboard-port / NATCHET_DASHBOARD_PORT",
    )
    if port is None:
        return None
    from natchet.dashboard.app import Dashboard
    from natchet.dashboard.auth import session_secret
    from natchet.dashboard.backend import DashboardSettings

    board = DashboardSettings(
        settings,
        session_secret(DEFAULT_DATA_DIR),
        env.get("NATCHET_PUBLIC_NATS_URL") or settings.nats_url,
    )
    host = args.dashboard_host or env.get("NATCHET_DASHBOARD_HOST") or "127.0.0.1"
    return Dashboard(board, host, port)


def _projector_argv(args: argparse.Namespace) -> list[str]:
    """The command of ``natchet engine``'s projector process: the same settings."""
    argv = [sys.executable, "-m", "natchet.cli", *(["-v"] if args.verbose else [])]
    argv += ["engine", "--role", "project", "--with-parent"]
    for flag, value in (
        ("--nats-url", args.nats_url),
        ("--database-url", args.database_url),
        ("--tenants", args.tenants),
        ("--replicas", None if args.replicas is None else str(args.replicas)),
    ):
        if value:
            argv += [flag, value]
    return argv


def cluster_size(value: int) -> int:
    """``--cluster``: 1 (one server) to 5 nodes (JetStream's most replicas)."""
    if not 1 <= value <= MAX_REPLICAS:
        raise ConfigError(f"--cluster: 1 to {MAX_REPLICAS} nodes, not {value}")
    return value


async def serve_dev(args: argparse.Namespace) -> int:
    from natchet.dev.serve import dev_engine

    async with dev_engine(
        args.data_dir,
        nats_url=args.nats_url,
        database_url=args.database_url,
        tenant=args.tenant,
        env_file=args.env_file,
        tls=args.tls,
        nats_auth_file=args.nats_auth_file or os.environ.get("NATCHET_NATS_AUTH_FILE"),
        metrics_port=port_from(
            0 if args.metrics_port is None else args.metrics_port, "--metrics-port"
        ),
        dashboard_port=None
        if args.no_dashboard
        else port_from(args.dashboard_port, "--dashboard-port"),
        cluster=cluster_size(args.cluster),
        dispatch_partitions=partitions_from(args.dispatch_partitions, "--dispatch-partitions"),
    ) as dev:
        print("natchet dev is up. A worker needs:\n")
        for key, value in dev.env.items():
            print(f"  export {key}={value}")
        print(f"\n(written to {' and '.join(str(f) for f in dev.env_files)})")
        print("Publish an event:  natchet event push user:create '{\"id\": 1}'")
        print(f"  or with any NATS client on {dev.tenant}.default.events.<key>:")
        print("  natchet token nats-context $HATCHET_CLIENT_TOKEN")
        if dev.metrics_url:
            print(f"Metrics: {dev.metrics_url}/metrics  (health: /live, /ready)")
        if args.cluster > 1:
            print(f"NATS: a cluster of {args.cluster} nodes, every stream with as many replicas")
        if dev.nats_monitor_url:
            print(
                f"NATS monitoring: {dev.nats_monitor_url} (/jsz?consumers=true: each "
                "workflow's pending tasks, what autoscalers such as KEDA read)"
            )
        if dev.dashboard_url:
            print(
                f"Dashboard: {dev.dashboard_url}  (its API: {dev.dashboard_url}/api/openapi.json)"
            )
            print(f"  sign in with the operator credential in {dev.operator_file}:")
            print(f"  {dev.operator_credential}")
        print("Press Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()  # until a signal cancels it
    return 0


async def demo_command(args: argparse.Namespace) -> int:
    from natchet.dev.demo import run_demo

    return await run_demo(args.events)
