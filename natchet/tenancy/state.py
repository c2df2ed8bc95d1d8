"""The fold of the system stream: every tenant, its limits and state, and every token.

Built by folding validated records in stream order (``schemas.tenancy.decode_system``);
:meth:`TenancyState.authenticate` decides a connection from it, never from Postgres.
"""

from __future__ import annotations

import datetime as dt
import hmac

import attrs

from schemas.tenancy import (
    OperatorCreated,
    OperatorRevoked,
    SystemMessage,
    TenantCreated,
    TenantLimitsChanged,
    TenantLogFull,
    TokenCreated,
    TokenError,
    TokenRevoked,
    expired,
    hash_secret,
    parse_operator_credential,
    parse_token,
)


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
        return expired(self.expires_at, now)


@attrs.define
class TenancyState:
    """Every tenant and token, folded from the system stream (in stream order)."""

    tenants: dict[str, TenantCreated] = attrs.field(factory=dict)
    tokens: dict[str, TokenRecord] = attrs.field(factory=dict)
    full: dict[str, str] = attrs.field(factory=dict)  # tenant -> when its log was found full
    operators: dict[str, OperatorCreated] = attrs.field(factory=dict)
    operators_revoked: dict[str, str] = attrs.field(factory=dict)  # id -> when

    def fold(self, message: SystemMessage) -> None:
        match message:
            case TenantCreated():
                self.tenants.setdefault(message.tenant, message)
            case TenantLimitsChanged():
                created = self.tenants.get(message.tenant)
                if created is not None:
                    self.tenants[message.tenant] = attrs.evolve(
                        created,
                        max_bytes=message.max_bytes,
                        max_connections=message.max_connections,
                        max_consumers=message.max_consumers,
                    )
                    self.full.pop(message.tenant, None)
            case TenantLogFull():
                if message.tenant in self.tenants:
                    self.full.setdefault(message.tenant, message.at)
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
            case OperatorCreated():
                self.operators.setdefault(message.operator_id, message)
            case OperatorRevoked():
                if message.operator_id in self.operators:
                    self.operators_revoked.setdefault(message.operator_id, message.revoked_at)
            case TokenRevoked():
                record = self.tokens.get(message.token_id)
                if record is not None and record.revoked_at is None:
                    self.tokens[message.token_id] = attrs.evolve(
                        record, revoked_at=message.revoked_at
                    )

    def authenticate_operator(self, text: str) -> OperatorCreated:
        """The operator a presented credential stands for; :class:`TokenError` if none."""
        operator_id, secret = parse_operator_credential(text)
        record = self.operators.get(operator_id)
        if record is None or not hmac.compare_digest(record.secret_sha256, hash_secret(secret)):
            raise TokenError(f"unknown operator credential {operator_id}", "unknown_token")
        if operator_id in self.operators_revoked:
            when = self.operators_revoked[operator_id]
            raise TokenError(f"operator credential {operator_id} was revoked at {when}", "revoked")
        return record

    def operator_good(self, operator_id: str) -> bool:
        """Whether a signed-in operator's credential still stands (not revoked)."""
        return operator_id in self.operators and operator_id not in self.operators_revoked

    def authenticate(self, text: str, now: dt.datetime | None = None) -> TokenRecord:
        """The record a presented token stands for; :class:`TokenError` names why not."""
        token = parse_token(text)
        record = self.tokens.get(token.token_id)
        if record is None or not hmac.compare_digest(
            record.secret_sha256, hash_secret(token.secret)
        ):
            raise TokenError(f"unknown token {token.token_id}", "unknown_token")
        if record.revoked_at is not None:
            raise TokenError(
                f"token {record.token_id} was revoked at {record.revoked_at}", "revoked"
            )
        if record.expired(now):
            raise TokenError(f"token {record.token_id} expired at {record.expires_at}", "expired")
        if token.tenant != record.tenant:
            # The secret is good, but the token was re-encoded to name another tenant: never
            # let it pass as that tenant's (it would connect to its own, and say otherwise).
            raise TokenError(
                f"token {record.token_id} is not a token of tenant {token.tenant}", "wrong_tenant"
            )
        if record.tenant not in self.tenants:
            raise TokenError(
                f"token {record.token_id}: tenant {record.tenant} does not exist", "unknown_tenant"
            )
        return record
