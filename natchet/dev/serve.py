"""The dev stack and the engine on it, as one async context: what ``natchet dev`` runs.

No signal handling here: the entry point (``natchet.cli.serve``) decides when to stop, by
leaving the context or by cancelling the task inside it. Either way, at any point of the
start-up or after it, the servers the stack started are stopped before the context exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import attrs

from natchet.config import DEV_ENV_FILE, EngineSettings, read_env_file, write_env_file
from natchet.dev.stack import DevStack
from natchet.dev.tenancy import OPERATOR_FILE, ensure_dev_tenant, ensure_operator
from natchet.engine import Engine
from schemas.errors import ConfigError

T = TypeVar("T")


def worker_env(settings: EngineSettings, tenant: str, token: str | None = None) -> dict[str, str]:
    """What a worker (and the CLI) needs to reach this engine."""
    # A cluster's nodes, comma-separated: clients reconnect to another when theirs dies.
    host_port = ",".join(url.split("://", 1)[-1] for url in settings.nats_url.split(","))
    env = {
        "HATCHET_CLIENT_HOST_PORT": host_port,
        "HATCHET_CLIENT_TENANT_ID": tenant,
        "HATCHET_CLIENT_NAMESPACE": "default",
        "NATCHET_NATS_URL": settings.nats_url,
        "NATCHET_DATABASE_URL": settings.database_url,
        "NATCHET_TENANTS": ",".join(settings.tenants),
    }
    if token:
        env["HATCHET_CLIENT_TOKEN"] = token
    auth = settings.nats_auth
    if auth is not None and settings.nats_auth_file:
        env["NATCHET_NATS_AUTH_FILE"] = settings.nats_auth_file
        if auth.tls is not None:
            env["HATCHET_CLIENT_TLS_STRATEGY"] = "tls"
            env["HATCHET_CLIENT_TLS_ROOT_CA_FILE"] = auth.tls.ca
    return env


async def in_thread_to_the_end(fn: Callable[[], T]) -> T:
    """``fn()`` in a thread. A cancel waits for ``fn`` to return before it propagates: a
    thread cannot be interrupted, and what it started must be known to be stopped."""
    running = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        raise


@attrs.frozen
class DevEngine:
    """A running dev stack and engine: where they are and what a worker needs."""

    settings: EngineSettings
    tenant: str
    env: dict[str, str]
    env_files: tuple[Path, ...]
    metrics_url: str | None = None  # where /metrics, /live and /ready are served
    # The embedded nats-server's monitoring endpoint (None: a server the user runs).
    nats_monitor_url: str | None = None
    # The dashboard (None: not served) and the operator credential that signs in to it.
    dashboard_url: str | None = None
    operator_credential: str | None = attrs.field(default=None, repr=False)
    operator_file: Path | None = None


@asynccontextmanager
async def dev_engine(
    data_dir: Path,
    *,
    nats_url: str | None,
    database_url: str | None,
    tenant: str,
    env_file: Path | None,
    tls: bool = False,
    nats_auth_file: str | None = None,
    metrics_port: int | None = None,
    dashboard_port: int | None = None,
    cluster: int = 1,
    dispatch_partitions: int = 1,
) -> AsyncIterator[DevEngine]:
    """Start the servers not given (in ``data_dir``, which no other stack may be using),
        the engine on them and ``tenant`` with its token; write the worker environment to
        ``data_dir/dev.env`` (and ``env_file``); with ``metrics_port`` (0: a free one), serve
        the engine's metrics and health on 127.0.0.1; with ``dashboard_port`` (0: a free one), the
    dashboard on 127.0.0.1, and an operator credential for it in ``data_dir/operator.credential``.
    With ``cluster`` > 1, NATS is a cluster of that many nodes and every stream has that
    many replicas (docs/scaling.md); ``dispatch_partitions``: each tenant's dispatch split
    into that many partitions, all in this engine. On exit, stop all of it."""
    if cluster > 1 and nats_url is not None:
        raise ConfigError(
            "--cluster starts an embedded NATS cluster, --nats-url uses a server you run: "
            "pass one of them (against your own cluster, set NATCHET_STREAM_REPLICAS)"
        )
    # The embedded server authenticates tenants (auth callout); a server the user runs
    # does when its config has natchet's callout and NATCHET_NATS_AUTH_FILE is given.
    stack = DevStack(
        data_dir,
        nats_url=nats_url,
        database_url=database_url,
        auth=nats_url is None,
        tls=tls,
        cluster=cluster,
    )
    try:
        await in_thread_to_the_end(stack.start)
        settings = EngineSettings(
            nats_url=stack.nats_url,
            database_url=stack.database_url,
            tenants=(tenant,),
            nats_auth_file=str(stack.auth_file) if stack.auth_file else nats_auth_file,
            discover_tenants=True,
            metrics_port=metrics_port,
            metrics_host="127.0.0.1",
            stream_replicas=max(1, cluster),
            dispatch_partitions=dispatch_partitions,
        )
        engine = Engine(settings)
        try:
            await engine.start()
            assert engine.nc is not None
            dev_env = data_dir / DEV_ENV_FILE
            previous = None
            if dev_env.exists():
                previous = read_env_file(dev_env).get("HATCHET_CLIENT_TOKEN")
            token = await ensure_dev_tenant(engine.nc, tenant, stack.nats_url, previous)
            env = worker_env(settings, tenant, token)
            files = (dev_env,) if env_file is None else (dev_env, env_file)
            for path in files:
                write_env_file(path, env)
            url = None if engine.health is None else engine.health.url
            monitor = stack.nats_monitor_url
            dashboard = None
            try:
                board_url = operator = operator_file = None
                if dashboard_port is not None:
                    from natchet.dashboard.app import Dashboard
                    from natchet.dashboard.auth import session_secret
                    from natchet.dashboard.backend import DashboardSettings

                    operator = await ensure_operator(engine.nc, data_dir)
                    operator_file = data_dir / OPERATOR_FILE
                    board = DashboardSettings(settings, session_secret(data_dir), stack.nats_url)
                    dashboard = Dashboard(board, "127.0.0.1", dashboard_port)
                    await dashboard.start()
                    board_url = dashboard.url
                yield DevEngine(
                    settings, tenant, env, files, url, monitor, board_url, operator, operator_file
                )
            finally:
                if dashboard is not None:
                    await dashboard.shutdown()
        finally:
            await engine.shutdown()
    finally:
        await in_thread_to_the_end(stack.stop)
