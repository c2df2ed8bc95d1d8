"""The JSON API under ``/api`` (its OpenAPI document at ``/api/openapi.json``).

Every route but sign-in needs a session; every state-changing one its CSRF token in the
``X-CSRF-Token`` header. Tenant routes sit under ``/api/tenants/{tenant}``: a tenant the
session may not see is 404, like one that does not exist."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from natchet.dashboard import actions
from natchet.dashboard.auth import (
    CSRF_HEADER,
    check_csrf,
    csrf_of,
    require_tenant,
    sign_in,
    sign_in_error,
    start_session,
)
from natchet.dashboard.deps import Ctx, context, signed_in
from schemas.tenancy import TokenError

router = APIRouter(prefix="/api")
Session = Annotated[Ctx, Depends(signed_in)]


async def changing(request: Request, ctx: Session) -> Ctx:
    """A signed-in, state-changing request: its CSRF header must match the session's."""
    check_csrf(request, request.headers.get(CSRF_HEADER))
    return ctx


Change = Annotated[Ctx, Depends(changing)]


class SignIn(BaseModel):
    token: str = Field(max_length=4096)


class NewTenant(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NewToken(BaseModel):
    name: str = Field(default="", max_length=128)
    expires: str | None = Field(default=None, max_length=16, description="30m, 12h, 7d, 2w")
    namespace: str | None = Field(default=None, max_length=64)


class Cancel(BaseModel):
    reason: str | None = Field(default=None, max_length=1024)


class Replay(BaseModel):
    from_step: str | None = Field(default=None, max_length=128)


def _who(ctx: Ctx, request: Request) -> dict[str, Any]:
    assert ctx.who is not None
    return {
        "kind": ctx.who.kind,
        "name": ctx.who.name,
        "tenants": ctx.who.visible(ctx.state),
        "may_create_tenants": ctx.who.operator,
        "csrf_token": csrf_of(request),
    }


@router.post("/session", summary="sign in with a tenant token or an operator credential")
async def post_session(
    body: SignIn, request: Request, ctx: Annotated[Ctx, Depends(context)]
) -> dict[str, Any]:
    try:
        who = sign_in(ctx.state, body.token)
    except TokenError as exc:
        raise HTTPException(401, sign_in_error(exc)) from None
    start_session(request, who)
    return _who(Ctx(ctx.backend, ctx.state, who), request)


@router.get("/session", summary="who is signed in, and the session's CSRF token")
async def get_session(ctx: Session, request: Request) -> dict[str, Any]:
    return _who(ctx, request)


@router.delete("/session", status_code=204, summary="sign out")
async def delete_session(ctx: Change, request: Request) -> Response:
    request.session.clear()
    return Response(status_code=204)


@router.get("/tenants")
async def get_tenants(ctx: Session) -> dict[str, Any]:
    assert ctx.who is not None
    return {"tenants": ctx.who.visible(ctx.state)}


@router.post("/tenants", status_code=201, summary="create a tenant (operators only)")
async def post_tenant(body: NewTenant, ctx: Change) -> dict[str, Any]:
    assert ctx.who is not None
    if not ctx.who.operator:
        raise HTTPException(403, "only an operator credential may create tenants")
    return await actions.create_tenant(ctx.backend, body.name)


def _tenant(ctx: Ctx, tenant: str) -> str:
    assert ctx.who is not None
    return require_tenant(ctx.who, ctx.state, tenant)


@router.get("/tenants/{tenant}/runs", summary="runs, newest first, by keyset pages")
async def get_runs(
    tenant: str,
    ctx: Session,
    status: str | None = None,
    workflow: str | None = None,
    namespace: str | None = None,
    run_id: str | None = None,
    event_key: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """``run_id`` matches the start of the id; ``since`` (inclusive) and ``until``
    (exclusive) bound the creation time (ISO 8601; UTC without a zone). ``total`` counts
    up to 10,000 (``exact`` false beyond)."""
    page = await actions.list_runs(
        ctx.backend,
        _tenant(ctx, tenant),
        status=status,
        workflow=workflow,
        namespace=namespace,
        run_id=run_id,
        event_key=event_key,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    return {"runs": page.rows, "total": page.total, "exact": page.exact, "next": page.next}


@router.get("/tenants/{tenant}/runs/{run_id}", summary="a run, its steps, attempts and logs")
async def get_run(tenant: str, run_id: str, ctx: Session) -> dict[str, Any]:
    return await actions.run_detail(ctx.backend, _tenant(ctx, tenant), run_id)


@router.get("/tenants/{tenant}/runs/{run_id}/audit", summary="the run's history, from the log")
async def get_audit(tenant: str, run_id: str, ctx: Session) -> dict[str, Any]:
    tenant = _tenant(ctx, tenant)
    run = await actions.run_detail(ctx.backend, tenant, run_id)
    return {"entries": await actions.audit(ctx.backend, tenant, run)}


@router.post("/tenants/{tenant}/runs/{run_id}/cancel", status_code=202)
async def post_cancel(tenant: str, run_id: str, ctx: Change, body: Cancel | None = None) -> Any:
    reason = body.reason if body else None
    return await actions.cancel(ctx.backend, _tenant(ctx, tenant), run_id, reason)


@router.post("/tenants/{tenant}/runs/{run_id}/replay", status_code=202, summary="re-run")
async def post_replay(tenant: str, run_id: str, ctx: Change, body: Replay | None = None) -> Any:
    from_step = body.from_step if body else None
    return await actions.replay(ctx.backend, _tenant(ctx, tenant), run_id, from_step)


@router.get("/tenants/{tenant}/workers")
async def get_workers(tenant: str, ctx: Session) -> dict[str, Any]:
    return {"workers": await actions.workers(ctx.backend, _tenant(ctx, tenant))}


@router.get("/tenants/{tenant}/events", summary="recent events, with the runs each started")
async def get_events(
    tenant: str,
    ctx: Session,
    namespace: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    page = await actions.events(ctx.backend, _tenant(ctx, tenant), namespace, after, limit)
    return {"events": page.rows, "total": page.total, "next": page.next}


@router.get(
    "/tenants/{tenant}/workflows",
    summary="registered workflows, their steps, triggers and versions",
)
async def get_workflows(tenant: str, ctx: Session, namespace: str | None = None) -> dict[str, Any]:
    return {"workflows": await actions.workflows(ctx.backend, _tenant(ctx, tenant), namespace)}


@router.get("/tenants/{tenant}/tokens", summary="the tenant's tokens (never their secrets)")
async def get_tokens(tenant: str, ctx: Session) -> dict[str, Any]:
    return {"tokens": actions.tokens_of(ctx.state, _tenant(ctx, tenant))}


@router.post("/tenants/{tenant}/tokens", status_code=201, summary="a new token, shown once")
async def post_token(tenant: str, body: NewToken, ctx: Change) -> dict[str, Any]:
    tenant = _tenant(ctx, tenant)
    return await actions.create_token(ctx.backend, tenant, body.name, body.expires, body.namespace)


@router.post("/tenants/{tenant}/tokens/{token_id}/revoke")
async def post_revoke(tenant: str, token_id: str, ctx: Change) -> dict[str, Any]:
    return await actions.revoke_token(ctx.backend, ctx.state, _tenant(ctx, tenant), token_id)
