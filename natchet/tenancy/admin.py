"""Creating tenants and tokens, revoking tokens, listing them: appends to the system stream.

Every change is a message in ``natchet-system`` (the log is the truth); the engine's
callout service and dispatchers follow it. A token's secret is returned once, here, and
only its sha256 is stored.
"""

from __future__ import annotations

import datetime as dt
import re

import attrs
from nats.aio.client import Client as NATS

from eventstore import Append, ConfigError, StreamLimits, append, ensure_tenant_stream
from eventstore.system import ensure_system_stream, read_system
from schemas import encode
from schemas.subjects import SubjectError, check_tenant
from schemas.tenancy import (
    TenancyState,
    TenantCreated,
    TokenCreated,
    TokenRevoked,
    decode_system,
    hash_secret,
    new_token,
    tenant_subject,
    token_subject,
)

DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w``."""
    match = DURATION_RE.match(text.strip())
    if not match:
        raise ConfigError(f"bad duration {text!r}: use a number and one of s, m, h, d, w")
    return dt.timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])


async def load_state(nc: NATS) -> TenancyState:
    await ensure_system_stream(nc)
    state = TenancyState()
    for rec in await read_system(nc):
        state.fold(decode_system(rec.subject, rec.data))
    return state


async def create_tenant(nc: NATS, tenant: str, *, max_bytes: int = -1) -> bool:
    """Create the tenant's stream and record it; ``False`` if it already existed."""
    try:
        check_tenant(tenant)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None
    await ensure_system_stream(nc)
    await ensure_tenant_stream(nc.jetstream(), tenant, StreamLimits(max_bytes=max_bytes))
    state = await load_state(nc)
    if tenant in state.tenants:
        return False
    message = TenantCreated(tenant=tenant, max_bytes=max_bytes)
    await append(nc, Append(tenant_subject(tenant), encode(message), f"tenant:{tenant}"))
    return True


@attrs.frozen
class IssuedToken:
    token_id: str
    tenant: str
    token: str = attrs.field(repr=False)
    expires_at: str | None


async def create_token(
    nc: NATS,
    tenant: str,
    url: str,
    *,
    name: str = "",
    expires_in: dt.timedelta | None = None,
) -> IssuedToken:
    state = await load_state(nc)
    if tenant not in state.tenants:
        raise ConfigError(f"no tenant {tenant!r}: create it with `natchet tenant create {tenant}`")
    expires_at = None
    if expires_in is not None:
        expires_at = (dt.datetime.now(dt.UTC) + expires_in).isoformat(timespec="seconds")
    token = new_token(tenant, url, expires_at)
    message = TokenCreated(
        token_id=token.token_id,
        tenant=tenant,
        secret_sha256=hash_secret(token.secret),
        name=name,
        expires_at=expires_at,
    )
    subject = token_subject(token.token_id, "created")
    await append(nc, Append(subject, encode(message), f"token:{token.token_id}"))
    return IssuedToken(token.token_id, tenant, token.encode(), expires_at)


async def revoke_token(nc: NATS, token_id: str) -> None:
    state = await load_state(nc)
    if token_id not in state.tokens:
        raise ConfigError(f"no token {token_id!r} (see `natchet token list`)")
    subject = token_subject(token_id, "revoked")
    await append(nc, Append(subject, encode(TokenRevoked(token_id)), f"revoke:{token_id}"))
