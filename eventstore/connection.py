"""Connecting to NATS: reconnect forever, TLS and tokens, and the 2.12 server floor."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import nats
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg

from eventstore.errors import AuthRefusedError, ConnectError, PermissionDeniedError

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


HEADER_ALLOWANCE = 1024  # natchet's own headers (dedup id, batch) on top of a body


def max_message_bytes(nc: NATS) -> int:
    """The largest body natchet appends on this connection: the server's max payload
    (which counts headers too) less room for natchet's headers."""
    return int(nc.max_payload) - HEADER_ALLOWANCE


def tls_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ``ca`` (the system's CAs when ``None``), presenting
    ``cert``/``key`` when both are given (mTLS)."""
    ctx = ssl.create_default_context(cafile=ca)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def normalize_url(address: str) -> str:
    """Accept ``host:port`` (Hatchet's HATCHET_CLIENT_HOST_PORT) as well as a NATS URL."""
    if "://" in address:
        return address
    return f"nats://{address}"


def server_urls(address: str) -> list[str]:
    """A cluster's nodes, comma-separated (``h1:4222,h2:4222`` or NATS URLs): each one
    normalized. The client connects to one and, when it dies, reconnects to another."""
    urls = [normalize_url(part.strip()) for part in address.split(",") if part.strip()]
    if not urls:
        raise ConnectError(f"no NATS address in {address!r}")
    return urls


@attrs.frozen
class NatsOptions:
    """How to reach NATS. ``tls`` is an ``ssl.SSLContext`` built by the caller, if any."""

    url: str
    name: str = "natchet"
    token: str | None = None
    tls: ssl.SSLContext | None = None
    tls_hostname: str | None = None
    connect_timeout_s: float = 5.0
    user: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    # Reply subjects start here; a tenant's broker permissions allow only ``_INBOX_<tenant>``.
    inbox_prefix: str | None = None
    # A user JWT and its seed (``.creds`` text): the engine's own users in operator mode.
    creds: str | None = attrs.field(default=None, repr=False)


AUTH_VIOLATION = "authorization violation"
PERMISSION_RE = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)

# Requests waiting on a subject, per client: a permission violation for that subject ends
# them at once (nats-py reports violations only to error_cb; the request would time out).
_denial_waiters: weakref.WeakKeyDictionary[NATS, dict[str, set[asyncio.Future[str]]]] = (
    weakref.WeakKeyDictionary()
)


def _note_violation(nc: NATS | None, exc: Exception) -> bool:
    match = PERMISSION_RE.search(str(exc))
    if match is None:
        return False
    if nc is not None and match.group(1).lower() == "publish":
        # nats-py lowercases the server's error line, subject included.
        for waiter in _denial_waiters.get(nc, {}).get(match.group(2).lower(), set()):
            if not waiter.done():
                waiter.set_result(str(exc))
    return True


async def request(
    nc: NATS,
    subject: str,
    payload: bytes,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """``nc.request`` that fails with :class:`PermissionDeniedError` as soon as the broker
    refuses the publish, instead of timing out."""
    waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiters = _denial_waiters.setdefault(nc, {}).setdefault(subject.lower(), set())
    waiters.add(waiter)
    call = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout_s, headers=headers))
    try:
        racers: set[asyncio.Future[Any]] = {call, waiter}
        await asyncio.wait(racers, return_when="FIRST_COMPLETED")
        if call.done():
            return call.result()
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        raise PermissionDeniedError(
            f"the NATS server refused to let this connection publish to {subject}: "
            f"{waiter.result()} (the token does not grant that subject)"
        )
    finally:
        waiters.discard(waiter)
        if not waiters:
            _denial_waiters.get(nc, {}).pop(subject.lower(), None)


CONNECTION_LIMIT = "maximum account active connections exceeded"


def is_auth_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, nats.errors.AuthorizationError)
        or AUTH_VIOLATION in text
        or CONNECTION_LIMIT in text
    )


def _refused(url: str, options: NatsOptions) -> AuthRefusedError:
    if options.token:
        how = (
            "refused the token (Authorization Violation): it is unknown, revoked or expired, or "
            "it belongs to another server. Create one with `natchet token create --tenant NAME`."
        )
    elif options.user:
        how = f"refused user {options.user!r} (Authorization Violation): check the password"
    elif options.creds:
        how = (
            "refused the engine's credentials (Authorization Violation): the server runs "
            "with another natchet auth file, or the account is not pushed to it yet"
        )
    else:
        how = (
            "requires authentication (Authorization Violation): set HATCHET_CLIENT_TOKEN to a "
            "token from `natchet tenant create` or `natchet token create`"
        )
    return AuthRefusedError(f"NATS at {url} {how}")


async def connect(
    options: NatsOptions,
    *,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
) -> NATS:
    """Connect (failing fast when the first connect fails), then reconnect forever."""
    servers = server_urls(options.url)
    url = ",".join(servers)

    auth_failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def error_cb(exc: Exception) -> None:
        if is_auth_error(exc) and not auth_failed.done():
            auth_failed.set_result(exc)
            if not client:
                return  # the first connect: connect() raises a ConnectError instead
        denied = _note_violation(client[0] if client else None, exc)
        if on_error is not None:
            await on_error(exc)
        elif denied or is_auth_error(exc):
            log.error("nats %s: %s", options.name, exc)
        else:
            log.warning("nats %s: %s", options.name, exc)

    client: list[NATS] = []

    async def disconnected_cb() -> None:
        if not (client and client[0].is_closed):  # a close we asked for is no news
            log.warning("nats %s: disconnected from %s, reconnecting", options.name, _at(client))

    async def reconnected_cb() -> None:
        log.warning("nats %s: reconnected to %s", options.name, _at(client))

    kwargs = {
        **_auth_kwargs(options),
        "servers": servers,
        "name": options.name,
        "connect_timeout": options.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
    }
    try:
        # nats-py retries the first connect forever when max_reconnect_attempts is -1 unless
        # told otherwise; a wrong address must fail fast instead.
        nc = await _connect_or_refused(kwargs, auth_failed, options.connect_timeout_s + 1)
    except _Refused:
        if CONNECTION_LIMIT in str(auth_failed.result()).lower():
            raise ConnectError(
                f"NATS at {url} refused the connection: this tenant already has as many "
                "connections open as it may (max_connections); close some, or raise the "
                "limit with `natchet tenant limits TENANT --max-connections N`"
            ) from None
        raise _refused(url, options) from None
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        raise ConnectError(
            f"cannot connect to NATS at {url}: {exc or type(exc).__name__}"
        ) from None
    except nats.errors.Error as exc:
        raise ConnectError(f"NATS at {url} refused the connection: {exc}") from None
    client.append(nc)
    if not auth_failed.done():
        auth_failed.cancel()  # later auth errors (a revoked token) go to on_error
    try:
        check_server(nc._server_info, url)
    except ConnectError:
        await nc.close()
        raise
    return nc


def _at(client: list[NATS]) -> str:
    """The server a client is (or was last) connected to."""
    server = client[0]._current_server if client else None
    return server.uri.geturl() if server is not None else "?"


def _auth_kwargs(options: NatsOptions) -> dict[str, Any]:
    """nats-py's arguments for the credential and TLS in ``options``."""
    kwargs: dict[str, Any] = {}
    if options.token:
        kwargs["token"] = options.token
    if options.user:
        kwargs["user"] = options.user
        kwargs["password"] = options.password or ""
    if options.inbox_prefix:
        kwargs["inbox_prefix"] = options.inbox_prefix
    if options.creds:
        kwargs["user_credentials"] = RawCredentials(options.creds)
    if options.tls is not None:
        kwargs["tls"] = options.tls
        if options.tls_hostname:
            kwargs["tls_hostname"] = options.tls_hostname
    return kwargs


class _Refused(Exception):
    pass


async def _connect_or_refused(
    kwargs: dict[str, Any], auth_failed: asyncio.Future[Exception], timeout_s: float
) -> NATS:
    """``nats.connect``, but an Authorization Violation ends it at once, not at the timeout
    (nats-py retries a refused first connect until then)."""
    nc = NATS()
    attempt = asyncio.ensure_future(nc.connect(**kwargs))
    waiting: set[asyncio.Future[Any]] = {attempt, auth_failed}
    done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when="FIRST_COMPLETED")
    if attempt in done:
        attempt.result()
        return nc
    attempt.cancel()
    await asyncio.gather(attempt, return_exceptions=True)
    await nc.close()
    if auth_failed in done:
        raise _Refused
    raise TimeoutError(f"no connection within {timeout_s}s")
