"""Creating tenants and tokens, revoking tokens, listing them: appends to the system stream.

Every change is a message in ``natchet-system`` (the log is the truth); the engine's
callout service and dispatchers follow it. A token's secret is returned once, here, and
only its sha256 is stored.
"""

from __future__ import annotations

import datetime as dt
import re

import attrs

from eventstore import Append, ConfigError, Connection, append
from eventstore.system import ensure_system_stream, read_system
from natchet.tenancy.state import TenancyState
from natchet.tenancy.view import fold_record
from schemas import encode
from schemas.subjects import SubjectError
from schemas.tenancy import (
    OperatorCreated,
    OperatorRevoked,
    TenantCreated,
    TenantLimitsChanged,
    TokenCreated,
    TokenRevoked,
    hash_secret,
    limits_subject,
    new_operator_credential,
    new_token,
    operator_subject,
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


async def load_state(nc: Connection) -> TenancyState:
    await ensure_system_stream(nc)
    state = TenancyState()
    for rec in await read_system(nc):
        fold_record(state, rec)
    return state


async def create_tenant(
    nc: Connection,
    tenant: str,
    *,
    max_bytes: int = -1,
    max_connections: int = -1,
    max_consumers: int = -1,
) -> bool:
    """Record a new tenant; the engine sets it up (its accounts and streams) as soon as it
    reads the record. ``False`` if it already existed."""
    try:
        message = TenantCreated(
            tenant=tenant,
            max_bytes=max_bytes,
            max_connections=max_connections,
            max_consumers=max_consumers,
        )
    except (SubjectError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    state = await load_state(nc)
    if tenant in state.tenants:
        return False
    await append(nc, Append(tenant_subject(tenant), encode(message), f"tenant:{tenant}"))
    return True


async def set_limits(
    nc: Connection,
    tenant: str,
    *,
    max_bytes: int | None = None,
    max_connections: int | None = None,
    max_consumers: int | None = None,
) -> TenantCreated:
    """Change a tenant's limits (those not given stay); the engine applies them to its
    accounts and log. Returns the tenant with its new limits."""
    state = await load_state(nc)
    current = state.tenants.get(tenant)
    if current is None:
        raise ConfigError(f"no tenant {tenant!r} (see `natchet tenant list`)")
    try:
        message = TenantLimitsChanged(
            tenant=tenant,
            max_bytes=current.max_bytes if max_bytes is None else max_bytes,
            max_connections=current.max_connections if max_connections is None else max_connections,
            max_consumers=current.max_consumers if max_consumers is None else max_consumers,
        )
    except (SubjectError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    await append(nc, Append(limits_subject(tenant), encode(message)))
    return attrs.evolve(
        current,
        max_bytes=message.max_bytes,
        max_connections=message.max_connections,
        max_consumers=message.max_consumers,
    )


@attrs.frozen
class IssuedToken:
    token_id: str
    tenant: str
    token: str = attrs.field(repr=False)
    expires_at: str | None


async def create_token(
    nc: Connection,
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


async def revoke_token(nc: Connection, token_id: str) -> None:
    state = await load_state(nc)
    if token_id not in state.tokens:
        raise ConfigError(f"no token {token_id!r} (see `natchet token list`)")
    subject = token_subject(token_id, "revoked")
    await append(nc, Append(subject, encode(TokenRevoked(token_id)), f"revoke:{token_id}"))


async def create_operator(nc: Connection, name: str = "") -> tuple[str, str]:
    """A new operator credential (the dashboard's, for every tenant): its id, and the text to
    present, returned once; the log keeps only the secret's sha256."""
    await ensure_system_stream(nc)
    operator_id, secret, text = new_operator_credential()
    message = OperatorCreated(operator_id=operator_id, secret_sha256=hash_secret(secret), name=name)
    subject = operator_subject(operator_id)
    await append(nc, Append(subject, encode(message), f"operator:{operator_id}"))
    return operator_id, text


async def revoke_operator(nc: Connection, operator_id: str) -> None:
    state = await load_state(nc)
    if operator_id not in state.operators:
        raise ConfigError(
            f"no operator credential {operator_id!r} (see `natchet admin-token list`)"
        )
    subject = operator_subject(operator_id, "revoked")
    message = OperatorRevoked(operator_id)
    await append(nc, Append(subject, encode(message), f"revoke-operator:{operator_id}"))
