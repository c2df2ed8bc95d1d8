"""Tenants and tokens: the system stream's wire types, the token format, and the fold.

The system stream ``natchet-system`` captures ``natchet.system.>``:

| subject                                  | body                |
|------------------------------------------|---------------------|
| ``natchet.system.tenants.<tenant>``      | :class:`TenantCreated` |
| ``natchet.system.limits.<tenant>``       | :class:`TenantLimitsChanged` |
| ``natchet.system.full.<tenant>``         | :class:`TenantLogFull` |
| ``natchet.system.tokens.<id>.created``   | :class:`TokenCreated`  |
| ``natchet.system.tokens.<id>.revoked``   | :class:`TokenRevoked`  |
| ``natchet.system.operators.<id>.created`` | :class:`OperatorCreated` |
| ``natchet.system.operators.<id>.revoked`` | :class:`OperatorRevoked` |

A token reads ``nct_<base64url(json {"t": tenant, "u": nats url, "id": token id,
"x": expiry or null})>.<secret>``: it carries everything a client needs to connect, and the
log keeps only ``sha256(secret)``. The fold of these records (who may connect) is the
engine's: ``natchet/tenancy/state.py``. Pure: no IO.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from typing import Any

import attrs
import orjson

from schemas.errors import NatchetError
from schemas.structure import structure, utcnow
from schemas.subjects import SubjectError, check_tenant

SYSTEM_STREAM = "natchet-system"
SYSTEM_SUBJECTS = "natchet.system.>"
TOKEN_PREFIX = "nct_"
# An operator credential (the dashboard's: every tenant) reads ``nco_<id>.<secret>``; the
# log keeps only ``sha256(secret)``, as for tenant tokens. It is never a NATS credential.
OPERATOR_PREFIX = "nco_"
TOKEN_ID_RE = re.compile(r"^[a-z0-9]{6,32}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Names the engine uses for itself (its stream ``natchet-system``, its accounts): never a
# tenant's, so no tenant's stream, account or subjects can be mistaken for the engine's.
RESERVED_TENANTS = frozenset({"system", "natchet", "sys", "auth", "engine", "log", "tenant"})


class TokenError(NatchetError, ValueError):
    """A token that cannot be read (malformed), or that is no longer good. ``reason`` is a
    fixed word for why (``malformed``, ``unknown_token``, ``revoked``, ``expired``,
    ``unknown_tenant``, ``wrong_tenant``, ``no_token``, ``tenant_unavailable``): the auth
    callout counts refusals by it."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def check_new_tenant(tenant: str) -> str:
    """A name a tenant may have: a valid subject token, and not one the engine keeps."""
    check_tenant(tenant)
    if tenant in RESERVED_TENANTS:
        raise SubjectError(
            f"tenant name {tenant!r} is reserved for the engine "
            f"({', '.join(sorted(RESERVED_TENANTS))}): pick another"
        )
    return tenant


def tenant_subject(tenant: str) -> str:
    return f"natchet.system.tenants.{check_new_tenant(tenant)}"


def limits_subject(tenant: str) -> str:
    return f"natchet.system.limits.{check_new_tenant(tenant)}"


def full_subject(tenant: str) -> str:
    return f"natchet.system.full.{check_new_tenant(tenant)}"


def token_subject(token_id: str, kind: str) -> str:
    return f"natchet.system.tokens.{token_id}.{kind}"


def inbox_prefix(tenant: str) -> str:
    """The reply-subject prefix a tenant's clients use (nats-py ``inbox_prefix``): the
    broker lets tenant ``A`` subscribe to ``_INBOX_A.>`` only, never to ``_INBOX.>``."""
    return f"_INBOX_{check_tenant(tenant)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _int(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise ValueError(f"{attribute.name} must be an integer >= -1, not {value!r}")


@attrs.frozen
class _TenantLimits:
    """A tenant and its limits (-1: none): ``max_bytes`` is its log's quota."""

    tenant: str = attrs.field(validator=lambda _i, _a, v: check_new_tenant(v))
    max_bytes: int = attrs.field(default=-1, validator=_int)
    max_connections: int = attrs.field(default=-1, validator=_int)
    max_consumers: int = attrs.field(default=-1, validator=_int)


@attrs.frozen
class TenantCreated(_TenantLimits):
    """A new tenant, with its limits."""

    KIND = "tenant_created"
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class TenantLimitsChanged(_TenantLimits):
    """New limits for a tenant (the engine applies them to its accounts and log)."""

    KIND = "tenant_limits_changed"
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class TenantLogFull:
    """The engine found the tenant's log full: it refuses new messages (none is dropped)."""

    KIND = "tenant_log_full"
    tenant: str = attrs.field(validator=lambda _i, _a, v: check_new_tenant(v))
    max_bytes: int = attrs.field(default=-1, validator=_int)
    reason: str = ""
    at: str = attrs.field(factory=utcnow)
    v: int = 1


def _token_id(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not TOKEN_ID_RE.match(value):
        raise ValueError(f"invalid token id {value!r}")


def _sha256(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise ValueError("invalid secret hash")


@attrs.frozen
class TokenCreated:
    KIND = "token_created"
    token_id: str = attrs.field(validator=_token_id)
    tenant: str = attrs.field(validator=lambda _i, _a, v: check_tenant(v))
    secret_sha256: str = attrs.field(validator=_sha256)
    name: str = ""
    expires_at: str | None = None
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class TokenRevoked:
    KIND = "token_revoked"
    token_id: str = attrs.field(validator=_token_id)
    revoked_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class OperatorCreated:
    """An operator credential: whoever holds it may see and create every tenant (in the
    dashboard). Only its secret's sha256 is kept."""

    KIND = "operator_created"
    operator_id: str = attrs.field(validator=_token_id)
    secret_sha256: str = attrs.field(validator=_sha256)
    name: str = ""
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class OperatorRevoked:
    KIND = "operator_revoked"
    operator_id: str = attrs.field(validator=_token_id)
    revoked_at: str = attrs.field(factory=utcnow)
    v: int = 1


def operator_subject(operator_id: str, kind: str = "created") -> str:
    return f"natchet.system.operators.{operator_id}.{kind}"


def new_operator_credential() -> tuple[str, str, str]:
    """A new operator credential: its id, its secret, and the text its holder presents."""
    operator_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return operator_id, secret, f"{OPERATOR_PREFIX}{operator_id}.{secret}"


def parse_operator_credential(text: str) -> tuple[str, str]:
    """The id and secret of an operator credential; :class:`TokenError` if it is not one."""
    body = text.strip().removeprefix(OPERATOR_PREFIX)
    operator_id, _, secret = body.partition(".")
    if not text.strip().startswith(OPERATOR_PREFIX) or not TOKEN_ID_RE.match(operator_id):
        raise TokenError("not an operator credential (nco_...)")
    if not secret:
        raise TokenError("not an operator credential (nco_...)")
    return operator_id, secret


SystemMessage = (
    TenantCreated
    | TenantLimitsChanged
    | TenantLogFull
    | TokenCreated
    | TokenRevoked
    | OperatorCreated
    | OperatorRevoked
)
TENANT_RECORDS: dict[str, type[TenantCreated | TenantLimitsChanged | TenantLogFull]] = {
    "tenants": TenantCreated,
    "limits": TenantLimitsChanged,
    "full": TenantLogFull,
}


def decode_system(subject: str, data: bytes) -> SystemMessage:
    """Decode and validate a system stream message by its subject; ``ValueError`` (or
    ``TypeError``) says what is wrong with one that is not a good one. The subject is
    trusted over the body: a body naming another tenant or token is refused."""
    parts = subject.split(".")
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"{subject}: body is not a JSON object")
    message: SystemMessage
    if parts[:2] == ["natchet", "system"] and len(parts) == 4 and parts[2] in TENANT_RECORDS:
        message = structure(TENANT_RECORDS[parts[2]], body)
        named = message.tenant
    elif parts[:3] == ["natchet", "system", "tokens"] and len(parts) == 5:
        if parts[4] == "created":
            message = structure(TokenCreated, body)
        elif parts[4] == "revoked":
            message = structure(TokenRevoked, body)
        else:
            raise ValueError(f"not a system subject: {subject!r}")
        named = message.token_id
    elif parts[:3] == ["natchet", "system", "operators"] and len(parts) == 5:
        if parts[4] == "created":
            message = structure(OperatorCreated, body)
        elif parts[4] == "revoked":
            message = structure(OperatorRevoked, body)
        else:
            raise ValueError(f"not a system subject: {subject!r}")
        named = message.operator_id
    else:
        raise ValueError(f"not a system subject: {subject!r}")
    if named != parts[3]:
        raise ValueError(f"{subject}: the body names {named!r}, the subject {parts[3]!r}")
    return message


# -- the token itself ----------------------------------------------------------------------


@attrs.frozen
class Token:
    """A parsed token: who it is for, where to connect, and the secret (never logged)."""

    token_id: str
    tenant: str
    url: str
    secret: str = attrs.field(repr=False)
    expires_at: str | None = None

    def encode(self) -> str:
        claims = {"t": self.tenant, "u": self.url, "id": self.token_id, "x": self.expires_at}
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")
        return f"{TOKEN_PREFIX}{payload}.{self.secret}"

    def expired(self, now: dt.datetime | None = None) -> bool:
        return expired(self.expires_at, now)


def expired(expires_at: str | None, now: dt.datetime | None = None) -> bool:
    """Whether an ISO expiry time has passed (``None`` never expires)."""
    if expires_at is None:
        return False
    return dt.datetime.fromisoformat(expires_at) <= (now or dt.datetime.now(dt.UTC))


def new_token(tenant: str, url: str, expires_at: str | None = None) -> Token:
    return Token(
        token_id=secrets.token_hex(8),
        tenant=check_tenant(tenant),
        url=url,
        secret=secrets.token_urlsafe(32),
        expires_at=expires_at,
    )


def parse_token(text: str) -> Token:
    """Read a token; :class:`TokenError` says what is wrong with a malformed one."""
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX) or "." not in text:
        raise TokenError(
            "malformed token: a natchet token starts with 'nct_' (see `natchet token create`)"
        )
    payload, _, secret = text[len(TOKEN_PREFIX) :].partition(".")
    try:
        claims: Any = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        token = Token(
            token_id=str(claims["id"]),
            tenant=check_tenant(str(claims["t"])),
            url=str(claims["u"]),
            secret=secret,
            expires_at=claims.get("x"),
        )
    except (ValueError, KeyError, TypeError, SubjectError) as exc:
        raise TokenError(f"malformed token: {exc}") from None
    if not TOKEN_ID_RE.match(token.token_id) or len(secret) < 16:
        raise TokenError("malformed token: bad id or secret")
    return token
