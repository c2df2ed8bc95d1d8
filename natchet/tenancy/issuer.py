"""Signing a tenant's two accounts, and the user JWTs the callout hands its users."""

from __future__ import annotations

import orjson

from eventstore import ConfigError, Connection, ask
from natchet.tenancy import jwt
from natchet.tenancy.accounts import (
    TenantLimits,
    activation_claims,
    log_account_claims,
    tenant_account_claims,
    tenant_grants,
)
from natchet.tenancy.serverconf import NatsAuth

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"


def tenant_account_jwts(auth: NatsAuth, tenant: str, limits: TenantLimits) -> list[str]:
    """The log account, then the tenant account that imports from it (push in order)."""
    log_seed, tenant_seed = auth.log_seed(tenant), auth.tenant_seed(tenant)
    log_key, tenant_key = auth.log_account(tenant), jwt.public_key(tenant_seed)
    activations = {
        g.subject: jwt.encode(activation_claims(tenant_key, g), log_seed)
        for g in tenant_grants(tenant)
    }
    log_claims = log_account_claims(tenant, log_key, tenant_key, limits)
    tenant_claims = tenant_account_claims(tenant, tenant_key, log_key, activations, limits)
    return [jwt.encode(c, auth.operator_seed) for c in (log_claims, tenant_claims)]


async def push_account(system: Connection, account_jwt: str, *, timeout_s: float = 5.0) -> None:
    """Hand an account JWT to the server's full resolver (it stores and applies it)."""
    reply = await ask(system, CLAIMS_UPDATE, account_jwt.encode(), timeout_s=timeout_s)
    answer = orjson.loads(reply.data)
    error = answer.get("error") if isinstance(answer, dict) else None
    if error:
        description = error.get("description", error) if isinstance(error, dict) else error
        raise ConfigError(f"the NATS server refused an account: {description}")
