"""Connecting to NATS: reconnect forever, TLS and tokens, and the 2.12 server floor."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import nats
from nats.aio.client import Client as NATS

from eventstore.errors import ConnectError

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = (2, 12, 0)


def parse_version(text: str) -> tuple[int, int, int]:
    core = text.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = [*core.split("."), "0", "0", "0"][:3]
    try:
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise ConnectError(f"cannot read the NATS server version {text!r}") from None


def check_server(info: dict[str, Any], url: str) -> None:
    """Refuse servers below the floor or without JetStream, saying which and what to do."""
    version = str(info.get("version", "0.0.0"))
    if parse_version(version) < MIN_SERVER_VERSION:
        floor = ".".join(map(str, MIN_SERVER_VERSION))
        raise ConnectError(
            f"NATS server at {url} is {version}; natchet needs nats-server >= {floor} "
            "(older servers silently ignore message TTLs, schedules and atomic batches). "
            "Run `natchet dev` for an embedded server, or upgrade."
        )
    if not info.get("jetstream"):
        raise ConnectError(
            f"NATS server at {url} ({version}) has JetStream disabled; start it with `-js` "
            "(or `jetstream {}` in its config)."
        )


def normalize_url(address: str) -> str:
    """Accept ``host:port`` (Hatchet's HATCHET_CLIENT_HOST_PORT) as well as a NATS URL."""
    if "://" in address:
        return address
    return f"nats://{address}"


@attrs.frozen
class NatsOptions:
    """How to reach NATS. ``tls`` is an ``ssl.SSLContext`` built by the caller, if any."""

    url: str
    name: str = "natchet"
    token: str | None = None
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    connect_timeout_s: float = 5.0


async def connect(
    options: NatsOptions,
    *,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
) -> NATS:
    """Connect (failing fast when the first connect fails), then reconnect forever."""
    url = normalize_url(options.url)

    async def error_cb(exc: Exception) -> None:
        if on_error is not None:
            await on_error(exc)
        else:
            log.warning("nats %s: %s", options.name, exc)

    client: list[NATS] = []

    async def disconnected_cb() -> None:
        if not (client and client[0].is_closed):  # a close we asked for is no news
            log.warning("nats %s: disconnected from %s, reconnecting", options.name, url)

    async def reconnected_cb() -> None:
        log.warning("nats %s: reconnected to %s", options.name, url)

    kwargs: dict[str, Any] = {
        "servers": [url],
        "name": options.name,
        "connect_timeout": options.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    if options.token:
        kwargs["token"] = options.token
    if options.tls is not None:
        kwargs["tls"] = options.tls
        if options.tls_hostname:
            kwargs["tls_hostname"] = options.tls_hostname
    try:
        # nats-py retries the first connect forever when max_reconnect_attempts is -1 unless
        # told otherwise; a wrong address must fail fast instead.
        nc = await asyncio.wait_for(nats.connect(**kwargs), timeout=options.connect_timeout_s + 1)
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        raise ConnectError(
            f"cannot connect to NATS at {url}: {exc or type(exc).__name__}"
        ) from None
    except nats.errors.Error as exc:
        raise ConnectError(f"NATS at {url} refused the connection: {exc}") from None
    client.append(nc)
    try:
        check_server(nc._server_info, url)
    except ConnectError:
        await nc.close()
        raise
    return nc
