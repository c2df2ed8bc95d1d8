"""Who is signed in, and what they may see.

A session (a signed, HttpOnly, SameSite=Lax cookie) holds the credential's id, never the
credential: each request checks it again against the system stream, so a revoked or
expired token signs its session out at once. A tenant token sees its tenant only; an
operator credential (``nco_...``) sees every tenant and may create them. Another tenant's
things answer 404, as if they did not exist. Every state-changing request carries the
session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``), else 403.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import attrs
from fastapi import HTTPException, Request

from natchet.tenancy.state import TenancyState
from schemas.tenancy import OPERATOR_PREFIX, TokenError

SECRET_ENV = "NATCHET_DASHBOARD_SECRET"
SECRET_FILE = "dashboard.secret"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def session_secret(data_dir: Path, env: dict[str, str] | None = None) -> str:
    """``$NATCHET_DASHBOARD_SECRET``, else the one kept in ``data_dir`` (made once, 0600)."""
    env = dict(os.environ) if env is None else env
    if env.get(SECRET_ENV):
        return env[SECRET_ENV]
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@attrs.frozen
class Principal:
    """``tenants``: those it may see (``None``: every one: an operator)."""

    kind: str  # "operator" or "tenant"
    credential_id: str
    name: str
    tenants: frozenset[str] | None

    @property
    def operator(self) -> bool:
        return self.tenants is None

    def may_see(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    def visible(self, state: TenancyState) -> list[str]:
        return sorted(t for t in state.tenants if self.may_see(t))


def sign_in(state: TenancyState, credential: str) -> Principal:
    """The principal a presented credential stands for; :class:`TokenError` says why not."""
    text = credential.strip()
    if not text:
        raise TokenError("enter a token", "no_token")
    if text.startswith(OPERATOR_PREFIX):
        op = state.authenticate_operator(text)
        return Principal("operator", op.operator_id, op.name or "operator", None)
    record = state.authenticate(text)
    return Principal(
        "tenant", record.token_id, record.name or record.tenant, frozenset([record.tenant])
    )


def start_session(request: Request, who: Principal) -> str:
    """Remember ``who`` in the session; a fresh CSRF token (returned)."""
    request.session.clear()
    csrf = secrets.token_urlsafe(24)
    request.session.update(kind=who.kind, id=who.credential_id, csrf=csrf)
    return csrf


def current(request: Request, state: TenancyState) -> Principal | None:
    """The session's principal, if its credential is still good (else the session ends)."""
    session: dict[str, Any] = request.session
    kind, cid = session.get("kind"), session.get("id")
    who: Principal | None = None
    if kind == "operator" and isinstance(cid, str) and state.operator_good(cid):
        op = state.operators[cid]
        who = Principal("operator", cid, op.name or "operator", None)
    elif kind == "tenant" and isinstance(cid, str):
        record = state.tokens.get(cid)
        good = (
            record is not None
            and record.revoked_at is None
            and not record.expired()
            and record.tenant in state.tenants
        )
        if good and record is not None:
            who = Principal("tenant", cid, record.name or record.tenant, frozenset([record.tenant]))
    if who is None and kind is not None:  # a credential no longer good: sign it out
        session.clear()
    return who


def csrf_of(request: Request) -> str:
    return str(request.session.get("csrf", ""))


def check_csrf(request: Request, presented: str | None) -> None:
    expected = csrf_of(request)
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token or csrf_token)")


def require_tenant(who: Principal, state: TenancyState, tenant: str) -> str:
    """``tenant`` if ``who`` may see it and it exists; else 404 (never "forbidden": another
    tenant's existence is not told)."""
    if not who.may_see(tenant) or tenant not in state.tenants:
        raise HTTPException(404, f"no tenant {tenant!r}")
    return tenant


def sign_in_error(exc: TokenError) -> str:
    return f"sign-in refused: {exc}"
