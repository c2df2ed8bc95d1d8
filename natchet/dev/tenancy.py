"""Tenancy for the dev stack: the embedded server's config and keys, the dev tenant's token."""

from __future__ import annotations

import logging
from pathlib import Path

from eventstore import Connection
from natchet.tenancy import admin
from natchet.tenancy.serverconf import (
    AUTH_FILE,
    CONFIG_FILE,
    RESOLVER_DIR,
    NatsAuth,
    server_config,
    write_server_files,
)
from schemas.errors import ConfigError
from schemas.tenancy import TokenError

log = logging.getLogger(__name__)


def prepare_nats_dir(nats_dir: Path, *, tls: bool = False) -> tuple[Path, Path]:
    """Write (or rewrite) the server config (operator mode, auth callout); keep the keys of
    a previous run when there is one. Returns the config and the engine's auth file."""
    auth_file = nats_dir / AUTH_FILE
    auth = None
    if auth_file.exists():
        try:
            auth = NatsAuth.load(auth_file)
        except ConfigError as exc:
            log.warning("%s; starting with new keys (tenants and tokens start afresh)", exc)
    if auth is None or (auth.tls is not None) != tls:
        tls_files = None
        if tls:
            from natchet.tenancy.tlsgen import generate_tls

            tls_files = generate_tls(nats_dir / "tls")
        auth = NatsAuth.generate(tls_files)
    return write_server_files(nats_dir, auth), auth_file


def prepare_cluster_dirs(
    nats_dir: Path, size: int, *, tls: bool = False
) -> tuple[list[Path], Path]:
    """:func:`prepare_nats_dir` for a cluster: one auth file (the keys), and a config per
    node (``node-<i>/nats-server.conf``), each with a resolver directory of its own (the
    full resolvers of a cluster's nodes share accounts pushed to any one of them)."""
    _, auth_file = prepare_nats_dir(nats_dir, tls=tls)
    auth = NatsAuth.load(auth_file)
    configs = []
    for i in range(size):
        node_dir = nats_dir / f"node-{i + 1}"
        (node_dir / RESOLVER_DIR).mkdir(parents=True, exist_ok=True)
        config = node_dir / CONFIG_FILE
        config.touch(mode=0o600)
        config.write_text(server_config(auth, resolver_dir=node_dir / RESOLVER_DIR))
        configs.append(config)
    return configs, auth_file


async def ensure_dev_tenant(nc: Connection, tenant: str, url: str, previous: str | None) -> str:
    """Create ``tenant`` if needed; reuse ``previous`` (the token of an earlier run) while
    it is still good, otherwise issue a new one."""
    await admin.create_tenant(nc, tenant)
    if previous:
        state = await admin.load_state(nc)
        try:
            record = state.authenticate(previous)
        except TokenError:
            pass
        else:
            if record.tenant == tenant:
                return previous
    issued = await admin.create_token(nc, tenant, url, name="natchet dev")
    log.info("issued token %s for tenant %s", issued.token_id, tenant)
    return issued.token


OPERATOR_FILE = "operator.credential"


async def ensure_operator(nc: Connection, data_dir: Path) -> str:
    """The dev stack's operator credential (the dashboard's sign-in for every tenant): the
    one in ``data_dir/operator.credential`` while the log still knows it, else a new one
    written there (0600). The log keeps only its hash."""
    path = data_dir / OPERATOR_FILE
    if path.exists():
        previous = path.read_text().strip()
        state = await admin.load_state(nc)
        try:
            state.authenticate_operator(previous)
        except TokenError:
            pass
        else:
            return previous
    operator_id, credential = await admin.create_operator(nc, name="natchet dev")
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(credential + "\n")
    log.info("issued operator credential %s", operator_id)
    return credential
