"""Tenants and tokens: the system stream's wire types, the token format, and the fold.

The system stream ``natchet-system`` captures ``natchet.system.>``:

| subject                                  | body                |
|------------------------------------------|---------------------|
| ``natchet.system.tenants.<tenant>``      | :class:`TenantCreated` |
| ``natchet.system.tokens.<id>.created``   | :class:`TokenCreated`  |
| ``natchet.system.tokens.<id>.revoked``   | :class:`TokenRevoked`  |

A token reads ``nct_<base64url(json {"t": tenant, "u": nats url, "id": token id,
"x": expiry or null})>.<secret>``: it carries everything a client needs to connect, and the
log keeps only ``sha256(secret)``. Pure: no IO.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

import attrs
import orjson

from schemas.messages import structure, utcnow
from schemas.subjects import SubjectError, check_tenant

SYSTEM_STREAM = "natchet-system"
SYSTEM_SUBJECTS = "natchet.system.>"
TOKEN_PREFIX = "nct_"
TOKEN_ID_RE = re.compile(r"^[a-z0-9]{6,32}$")


class TokenError(ValueError):
    """A token that cannot be read (malformed), or that is no longer good."""


def tenant_subject(tenant: str) -> str:
    return f"natchet.system.tenants.{check_tenant(tenant)}"


def token_subject(token_id: str, kind: str) -> str:
    return f"natchet.system.tokens.{token_id}.{kind}"


def inbox_prefix(tenant: str) -> str:
    """The reply-subject prefix a tenant's clients use (nats-py ``inbox_prefix``): the
    broker lets tenant ``A`` subscribe to ``_INBOX_A.>`` only, never to ``_INBOX.>``."""
    return f"_INBOX_{check_tenant(tenant)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@attrs.frozen
class TenantCreated:
    KIND = "tenant_created"
    tenant: str
    max_bytes: int = -1
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class TokenCreated:
    KIND = "token_created"
    token_id: str
    tenant: str
    secret_sha256: str
    name: str = ""
    expires_at: str | None = None
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class TokenRevoked:
    KIND = "token_revoked"
    token_id: str
    revoked_at: str = attrs.field(factory=utcnow)
    v: int = 1


SystemMessage = TenantCreated | TokenCreated | TokenRevoked


def decode_system(subject: str, data: bytes) -> SystemMessage:
    """Decode a system stream message by its subject; ``ValueError`` if it is not one."""
    parts = subject.split(".")
    body = orjson.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"{subject}: body is not a JSON object")
    if parts[:3] == ["natchet", "system", "tenants"]:
        return structure(TenantCreated, body)
    if parts[:3] == ["natchet", "system", "tokens"] and len(parts) == 5:
        if parts[4] == "created":
            return structure(TokenCreated, body)
        if parts[4] == "revoked":
            return structure(TokenRevoked, body)
    raise ValueError(f"not a system subject: {subject!r}")


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
        return _expired(self.expires_at, now)


def _expired(expires_at: str | None, now: dt.datetime | None) -> bool:
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


# -- the fold --------------------------------------------------------------------------------


@attrs.frozen
class TokenRecord:
    token_id: str
    tenant: str
    secret_sha256: str = attrs.field(repr=False)
    name: str = ""
    expires_at: str | None = None
    created_at: str = ""
    revoked_at: str | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        return _expired(self.expires_at, now)


@attrs.define
class TenancyState:
    """Every tenant and token, folded from the system stream (in stream order)."""

    tenants: dict[str, TenantCreated] = attrs.field(factory=dict)
    tokens: dict[str, TokenRecord] = attrs.field(factory=dict)

    def fold(self, message: SystemMessage) -> None:
        match message:
            case TenantCreated():
                self.tenants.setdefault(message.tenant, message)
            case TokenCreated():
                self.tokens.setdefault(
                    message.token_id,
                    TokenRecord(
                        token_id=message.token_id,
                        tenant=message.tenant,
                        secret_sha256=message.secret_sha256,
                        name=message.name,
                        expires_at=message.expires_at,
                        created_at=message.created_at,
                    ),
                )
            case TokenRevoked():
                record = self.tokens.get(message.token_id)
                if record is not None and record.revoked_at is None:
                    self.tokens[message.token_id] = attrs.evolve(
                        record, revoked_at=message.revoked_at
                    )

    def authenticate(self, text: str, now: dt.datetime | None = None) -> TokenRecord:
        """The record a presented token stands for; :class:`TokenError` names why not."""
        token = parse_token(text)
        record = self.tokens.get(token.token_id)
        if record is None or not hmac.compare_digest(
            record.secret_sha256, hash_secret(token.secret)
        ):
            raise TokenError(f"unknown token {token.token_id}")
        if record.revoked_at is not None:
            raise TokenError(f"token {record.token_id} was revoked at {record.revoked_at}")
        if record.expired(now):
            raise TokenError(f"token {record.token_id} expired at {record.expires_at}")
        if record.tenant not in self.tenants:
            raise TokenError(f"token {record.token_id}: tenant {record.tenant} does not exist")
        return record
