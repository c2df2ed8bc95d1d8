"""``natchet dev`` and ``natchet engine``: run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from natchet.config import DEV_ENV_FILE, EngineSettings, read_env_file, write_env_file
from natchet.devstack import DevStack
from natchet.engine import Engine
from natchet.tenancy.devsetup import ensure_dev_tenant

log = logging.getLogger(__name__)


def worker_env(settings: EngineSettings, tenant: str, token: str | None = None) -> dict[str, str]:
    """What a worker (and the CLI) needs to reach this engine."""
    host_port = settings.nats_url.split("://", 1)[-1]
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


async def wait_for_signal() -> signal.Signals:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not got.done():
            got.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await got
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve_engine(settings: EngineSettings) -> int:
    async with Engine(settings):
        sig = await wait_for_signal()
        log.info("%s: shutting down", sig.name)
    return 0


async def serve_dev(
    data_dir: Path,
    *,
    nats_url: str | None,
    database_url: str | None,
    tenant: str,
    env_file: Path | None,
    tls: bool = False,
    nats_auth_file: str | None = None,
) -> int:
    # The embedded server authenticates tenants (auth callout); a server the user runs
    # does when its config has natchet's callout and NATCHET_NATS_AUTH_FILE is given.
    stack = DevStack(
        data_dir, nats_url=nats_url, database_url=database_url, auth=nats_url is None, tls=tls
    )
    await asyncio.to_thread(stack.start)
    try:
        auth_file = str(stack.auth_file) if stack.auth_file else nats_auth_file
        settings = EngineSettings(
            nats_url=stack.nats_url,
            database_url=stack.database_url,
            tenants=(tenant,),
            nats_auth_file=auth_file,
            discover_tenants=True,
        )
        async with Engine(settings) as engine:
            assert engine.nc is not None
            previous = None
            if (data_dir / DEV_ENV_FILE).exists():
                previous = read_env_file(data_dir / DEV_ENV_FILE).get("HATCHET_CLIENT_TOKEN")
            token = await ensure_dev_tenant(engine.nc, tenant, stack.nats_url, previous)
            env = worker_env(settings, tenant, token)
            write_env_file(data_dir / DEV_ENV_FILE, env)
            if env_file is not None:
                write_env_file(env_file, env)
            print("natchet dev is up. A worker needs:\n")
            for key, value in env.items():
                print(f"  export {key}={value}")
            print(f"\n(written to {data_dir / DEV_ENV_FILE}", end="")
            print(f" and {env_file})" if env_file else ")")
            print("Publish an event:  natchet event push user:create '{\"id\": 1}'")
            print(f"  or with any NATS client on {tenant}.default.events.<key>:")
            print("  natchet token nats-context $HATCHET_CLIENT_TOKEN")
            print("Press Ctrl-C to stop.", flush=True)
            await wait_for_signal()
    finally:
        await asyncio.to_thread(stack.stop)
    return 0
