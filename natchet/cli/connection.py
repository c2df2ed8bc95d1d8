"""How every CLI command finds and reaches NATS and Postgres: the flags, the environment
(flags first, then ``NATCHET_*``/``HATCHET_CLIENT_*``, then ``.natchet/dev.env``; see
:func:`natchet.config.layered_env`), and the connections, with driver errors translated
into one-line :class:`~schemas.errors.NatchetError`\\ s that say what to do.

A command reaches NATS in one of three roles:

* ``engine``: the engine's own account (tenants, tokens), with its auth file if any;
* ``log``: the engine inside one tenant's log account (cancel a run, list workers);
* ``tenant``: as a tenant's client, with its token (``HATCHET_CLIENT_TOKEN``), as a worker
  or the ``nats`` CLI would (``event push``).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from eventstore import ConnectError, Connection, NatsOptions, close, connect, tls_context
from natchet.config import DEFAULT_TENANT, layered_env, resolve_tenant
from schemas.errors import ConfigError, NatchetError
from schemas.subjects import check_tenant
from schemas.tenancy import TOKEN_PREFIX, inbox_prefix, parse_token

Role = Literal["engine", "log", "tenant"]

CLIENT_NAME = "natchet-cli"
START_DEV = "run `natchet dev` in this directory"


class UnreachableError(NatchetError):
    """A server the command needs does not answer (or refuses), with what to do."""


def add_nats_flags(sp: argparse.ArgumentParser, *, role: Role = "engine") -> None:
    """``--nats-url`` (and the flags ``role`` needs) on subcommand ``sp``."""
    sp.add_argument("--nats-url", help="NATS server (env NATCHET_NATS_URL)")
    if role != "tenant":
        sp.add_argument(
            "--nats-auth-file",
            help="engine credentials, from `natchet nats-config` (env NATCHET_NATS_AUTH_FILE)",
        )
    if role != "engine":
        sp.add_argument("--tenant", help="tenant (env HATCHET_CLIENT_TENANT_ID, default dev)")


def add_database_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--database-url", help="PostgreSQL URL (env NATCHET_DATABASE_URL)")


def tenant_of(args: argparse.Namespace, env: dict[str, str] | None = None) -> str:
    """``--tenant``, else the environment's, else the token's, else ``dev``; validated."""
    env = layered_env() if env is None else env
    token = env.get("HATCHET_CLIENT_TOKEN") or ""
    default = parse_token(token).tenant if token.startswith(TOKEN_PREFIX) else DEFAULT_TENANT
    return check_tenant(resolve_tenant(getattr(args, "tenant", None), env, default))


def nats_url(args: argparse.Namespace, env: dict[str, str], *, role: Role = "engine") -> str:
    url = args.nats_url or env.get("NATCHET_NATS_URL")
    if not url and role == "tenant":
        url = env.get("HATCHET_CLIENT_HOST_PORT")
    if not url:
        raise ConfigError(f"no NATS address: pass --nats-url, set NATCHET_NATS_URL, or {START_DEV}")
    return str(url)


def public_nats_url(args: argparse.Namespace) -> str:
    """The NATS address tokens name (clients may reach the server by another name)."""
    env = layered_env()
    return env.get("NATCHET_PUBLIC_NATS_URL") or nats_url(args, env)


def nats_options(args: argparse.Namespace, *, role: Role, tenant: str | None = None) -> NatsOptions:
    """How this command reaches NATS in ``role`` (``tenant`` for ``log``; for ``tenant``,
    :func:`tenant_of` unless given)."""
    env = layered_env()
    url = nats_url(args, env, role=role)
    if role == "tenant":
        return _tenant_options(url, tenant or tenant_of(args, env), env)
    auth_file = getattr(args, "nats_auth_file", None) or env.get("NATCHET_NATS_AUTH_FILE")
    if auth_file:
        from natchet.tenancy.serverconf import NatsAuth

        if role == "log" and tenant is None:
            raise ValueError("role 'log' needs a tenant")
        who = "engine" if role == "engine" else f"log:{tenant}"
        return NatsAuth.load(Path(auth_file)).options(url, CLIENT_NAME, who)
    return NatsOptions(url=url, name=CLIENT_NAME, token=env.get("NATCHET_NATS_TOKEN") or None)


def log_account(args: argparse.Namespace, tenant: str) -> str:
    """The NATS account that holds ``tenant``'s log and task queues, as the server's
    monitoring endpoint names it (``/jsz?acc=``, KEDA's ``account``): its public key when
    NATS runs in operator mode (an auth file), else the global account ``$G``."""
    env = layered_env()
    auth_file = getattr(args, "nats_auth_file", None) or env.get("NATCHET_NATS_AUTH_FILE")
    if not auth_file:
        return "$G"
    from natchet.tenancy.serverconf import NatsAuth

    return NatsAuth.load(Path(auth_file)).log_account(tenant)


def _tenant_options(url: str, tenant: str, env: dict[str, str]) -> NatsOptions:
    strategy = env.get("HATCHET_CLIENT_TLS_STRATEGY", "none").lower()
    tls = None
    if strategy != "none":
        tls = tls_context(
            env.get("HATCHET_CLIENT_TLS_ROOT_CA_FILE") or None,
            env.get("HATCHET_CLIENT_TLS_CERT_FILE") or None,
            env.get("HATCHET_CLIENT_TLS_KEY_FILE") or None,
        )
    return NatsOptions(
        url=url,
        name=CLIENT_NAME,
        token=env.get("HATCHET_CLIENT_TOKEN") or None,
        tls=tls,
        inbox_prefix=inbox_prefix(tenant),
    )


@asynccontextmanager
async def open_nats(
    args: argparse.Namespace, *, role: Role, tenant: str | None = None
) -> AsyncIterator[Connection]:
    """A NATS connection as :func:`nats_options` describes, drained on exit; a server that
    does not answer is an :class:`UnreachableError` that says where the address came from."""
    options = nats_options(args, role=role, tenant=tenant)
    try:
        nc = await connect(options)
    except ConnectError as exc:
        # Only "nobody answers" lacks advice; refusals and old servers say what to do.
        if not str(exc).startswith("cannot connect"):
            raise
        raise UnreachableError(
            f"{exc}: is it running? Check --nats-url / NATCHET_NATS_URL, or {START_DEV}"
        ) from None
    try:
        yield nc
    finally:
        await close(nc)


def database_url(args: argparse.Namespace) -> str:
    url = args.database_url or layered_env().get("NATCHET_DATABASE_URL")
    if not url:
        raise ConfigError(
            "NATCHET_DATABASE_URL is not set: pass --database-url, export it, or " + START_DEV
        )
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the database URL {url!r} cannot be read: {exc}") from None
    return str(url)


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection to the read model, or an :class:`UnreachableError` that says why not;
    a database natchet never migrated is refused the same way."""
    where = _where(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreachableError(
            f"cannot reach PostgreSQL at {where} ({reason.removeprefix('connection failed: ')}):"
            f" is it running? Check --database-url / NATCHET_DATABASE_URL, or {START_DEV}"
        ) from None
    async with conn:
        try:
            yield conn
        except psycopg.errors.UndefinedTable:
            raise UnreachableError(
                f"the database at {where} has no natchet tables: is it the engine's? "
                "(`natchet engine` creates them when it starts)"
            ) from None


def _where(url: str) -> str:
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "?"
    host, port, name = parts.get("host", "localhost"), parts.get("port", 5432), parts.get("dbname")
    return f"{host}:{port}" + (f"/{name}" if name else "")
