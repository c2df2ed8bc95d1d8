"""The HTML pages: server-rendered (Jinja2), working without JavaScript; the small vendored
script (``static/dashboard.js``) only adds live updates (SSE) and copy buttons. Every form
carries the session's CSRF token; every action calls :mod:`natchet.dashboard.actions`, the
same functions the JSON API does."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from natchet.dashboard import actions
from natchet.dashboard.auth import (
    CSRF_FIELD,
    check_csrf,
    csrf_of,
    require_tenant,
    sign_in,
    sign_in_error,
    start_session,
)
from natchet.dashboard.dag import COLOURS, dag_svg
from natchet.dashboard.deps import Ctx, context
from schemas import RunStatus
from schemas.tenancy import TokenError

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
templates.env.filters["q"] = lambda v: quote(str(v), safe="")


class SignInRequired(Exception):
    """A page asked for without a session: the app sends the browser to sign in."""


async def page_ctx(request: Request) -> Ctx:
    ctx = await context(request)
    if ctx.who is None:
        raise SignInRequired
    return ctx


Page = Annotated[Ctx, Depends(page_ctx)]
# Missing, it is "" and refused (403) by check_csrf, not a 422.
Csrf = Annotated[str, Form(alias=CSRF_FIELD, max_length=256)]


def render(
    request: Request, ctx: Ctx | None, name: str, tenant: str | None = None, **values: Any
) -> HTMLResponse:
    who = None if ctx is None else ctx.who
    if not csrf_of(request):  # a form before sign-in carries one too
        request.session["csrf"] = secrets.token_urlsafe(24)
    status = int(values.pop("status_code", 200))
    return templates.TemplateResponse(
        request,
        name,
        {
            "who": who,
            "tenants": [] if ctx is None or who is None else who.visible(ctx.state),
            "tenant": tenant,
            "namespace": request.session.get("namespace") or "",
            "csrf": csrf_of(request),
            "csrf_field": CSRF_FIELD,
            "colours": COLOURS,
            "msg": request.query_params.get("msg", ""),
            **values,
        },
        status_code=status,
    )


def back(url: str, msg: str = "") -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (f"{sep}{urlencode({'msg': msg})}" if msg else ""), 303)


def _tenant(ctx: Ctx, tenant: str) -> str:
    assert ctx.who is not None
    return require_tenant(ctx.who, ctx.state, tenant)


async def _page(request: Request, ctx: Ctx, name: str, tenant: str, **values: Any) -> HTMLResponse:
    """A tenant's page, with the namespace selector's options."""
    known = await actions.namespaces(ctx.backend, tenant)
    return render(request, ctx, name, tenant, namespaces=known, **values)


@router.get("/")
async def home(request: Request, ctx: Annotated[Ctx, Depends(context)]) -> Response:
    if ctx.who is None:
        return RedirectResponse("/signin", 303)
    visible = ctx.who.visible(ctx.state)
    if not visible:
        return render(request, ctx, "empty.html")
    return RedirectResponse(f"/t/{quote(visible[0], safe='')}/runs", 303)


@router.get("/signin")
async def signin_page(request: Request) -> HTMLResponse:
    return render(request, None, "signin.html", error="")


@router.post("/signin")
async def signin(
    request: Request,
    ctx: Annotated[Ctx, Depends(context)],
    csrf: Csrf = "",
    token: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    check_csrf(request, csrf)
    try:
        who = sign_in(ctx.state, token)
    except TokenError as exc:
        return render(request, None, "signin.html", error=sign_in_error(exc), status_code=401)
    start_session(request, who)
    return RedirectResponse("/", 303)


@router.post("/signout")
async def signout(request: Request, csrf: Csrf = "") -> Response:
    check_csrf(request, csrf)
    request.session.clear()
    return RedirectResponse("/signin", 303)


@router.post("/namespace")
async def choose_namespace(
    request: Request,
    ctx: Page,
    csrf: Csrf = "",
    namespace: Annotated[str, Form(max_length=64)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=2048)] = "/",
) -> Response:
    check_csrf(request, csrf)
    request.session["namespace"] = actions.check_name(namespace, "namespace") or ""
    # Only back to a page of this site.
    return RedirectResponse(
        next_url if next_url.startswith("/") and not next_url.startswith("//") else "/", 303
    )


@router.post("/tenants")
async def add_tenant(
    request: Request, ctx: Page, csrf: Csrf = "", name: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    check_csrf(request, csrf)
    assert ctx.who is not None
    if not ctx.who.operator:
        raise HTTPException(403, "only an operator credential may create tenants")
    created = await actions.create_tenant(ctx.backend, name)
    return back(
        f"/t/{quote(created['tenant'], safe='')}/settings", f"tenant {created['tenant']} created"
    )


@router.get("/t/{tenant}/runs")
async def runs(
    request: Request,
    tenant: str,
    ctx: Page,
    status: str = "",
    workflow: str = "",
    run_id: str = "",
    event_key: str = "",
    since: str = "",
    until: str = "",
    after: str = "",
) -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    namespace = request.session.get("namespace") or None
    live_from = await actions.live_from(ctx.backend, tenant)
    page = await actions.list_runs(
        ctx.backend,
        tenant,
        status=status or None,
        workflow=workflow or None,
        namespace=namespace,
        run_id=run_id or None,
        event_key=event_key or None,
        since=since or None,
        until=until or None,
        after=after or None,
        limit=50,
    )
    filters = {
        "status": status,
        "workflow": workflow,
        "run_id": run_id,
        "event_key": event_key,
        "since": since,
        "until": until,
    }
    more = None
    if page.next:
        more = "?" + urlencode({**{k: v for k, v in filters.items() if v}, "after": page.next})
    return await _page(
        request,
        ctx,
        "runs.html",
        tenant,
        page=page,
        filters=filters,
        statuses=actions.STATUSES,
        more=more,
        live_from=live_from,
    )


@router.get("/t/{tenant}/runs/{run_id}")
async def run(request: Request, tenant: str, run_id: str, ctx: Page) -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    live_from = await actions.live_from(ctx.backend, tenant)
    detail = await actions.run_detail(ctx.backend, tenant, run_id)
    timeline = await actions.audit(ctx.backend, tenant, detail)
    return await _page(
        request,
        ctx,
        "run.html",
        tenant,
        run=detail,
        dag=dag_svg(detail["steps"]),
        timeline=timeline,
        # An attempt's traceback is in its result message (the read model keeps the error).
        tracebacks={
            (e["step"], e["attempt"], e["delivery"]): e["traceback"]
            for e in timeline
            if e.get("traceback")
        },
        ended=RunStatus(detail["status"]).terminal,
        live_from=live_from,
    )


@router.post("/t/{tenant}/runs/{run_id}/cancel")
async def cancel(
    request: Request, tenant: str, run_id: str, ctx: Page, csrf: Csrf = ""
) -> Response:
    check_csrf(request, csrf)
    tenant = _tenant(ctx, tenant)
    await actions.cancel(ctx.backend, tenant, run_id, "cancelled from the dashboard")
    return back(f"/t/{quote(tenant, safe='')}/runs/{quote(run_id, safe='')}", "cancel requested")


@router.post("/t/{tenant}/runs/{run_id}/replay")
async def replay(
    request: Request,
    tenant: str,
    run_id: str,
    ctx: Page,
    csrf: Csrf = "",
    from_step: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    check_csrf(request, csrf)
    tenant = _tenant(ctx, tenant)
    done = await actions.replay(ctx.backend, tenant, run_id, from_step or None)
    if done["answer"] != "created":
        where = f"/t/{quote(tenant, safe='')}/runs/{quote(run_id, safe='')}"
        return back(where, f"re-run {done['run_id']}: {done['reason']}")
    await actions.projected(ctx.backend, tenant, done["run_id"])
    return back(
        f"/t/{quote(tenant, safe='')}/runs/{quote(done['run_id'], safe='')}",
        f"re-run of {run_id} requested",
    )


@router.get("/t/{tenant}/workers")
async def workers(request: Request, tenant: str, ctx: Page) -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    rows = await actions.workers(ctx.backend, tenant)
    return await _page(request, ctx, "workers.html", tenant, workers=rows)


@router.get("/t/{tenant}/events")
async def events(request: Request, tenant: str, ctx: Page, after: str = "") -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    namespace = request.session.get("namespace") or None
    page = await actions.events(ctx.backend, tenant, namespace, after or None, 20)
    more = "?" + urlencode({"after": page.next}) if page.next else None
    return await _page(request, ctx, "events.html", tenant, page=page, more=more)


@router.get("/t/{tenant}/workflows")
async def workflows(request: Request, tenant: str, ctx: Page) -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    rows = await actions.workflows(ctx.backend, tenant, request.session.get("namespace") or None)
    for wf in rows:
        wf["dag"] = dag_svg([{**s, "status": None} for s in wf["steps"]])
    return await _page(request, ctx, "workflows.html", tenant, workflows=rows)


@router.get("/t/{tenant}/settings")
async def settings(request: Request, tenant: str, ctx: Page) -> HTMLResponse:
    tenant = _tenant(ctx, tenant)
    return await _page(
        request,
        ctx,
        "settings.html",
        tenant,
        tokens=actions.tokens_of(ctx.state, tenant),
        issued=None,
    )


@router.post("/t/{tenant}/tokens")
async def new_token(
    request: Request,
    tenant: str,
    ctx: Page,
    csrf: Csrf = "",
    name: Annotated[str, Form(max_length=128)] = "",
    expires: Annotated[str, Form(max_length=16)] = "",
    namespace: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    check_csrf(request, csrf)
    tenant = _tenant(ctx, tenant)
    issued = await actions.create_token(
        ctx.backend, tenant, name, expires or None, namespace or None
    )
    state = await ctx.backend.state()
    # Shown in this response only: never stored, never shown again.
    response = await _page(
        request,
        ctx,
        "settings.html",
        tenant,
        tokens=actions.tokens_of(state, tenant),
        issued=issued,
        status_code=201,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/t/{tenant}/tokens/{token_id}/revoke")
async def revoke(
    request: Request, tenant: str, token_id: str, ctx: Page, csrf: Csrf = ""
) -> Response:
    check_csrf(request, csrf)
    tenant = _tenant(ctx, tenant)
    await actions.revoke_token(ctx.backend, ctx.state, tenant, token_id)
    return back(f"/t/{quote(tenant, safe='')}/settings", f"token {token_id} revoked")
