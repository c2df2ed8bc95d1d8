"""The request context every route starts from: the backend, the tenancy state folded
now, and who is signed in (401 for the API when nobody is)."""

from __future__ import annotations

import attrs
from fastapi import HTTPException, Request

from natchet.dashboard.auth import Principal, current
from natchet.dashboard.backend import Backend
from natchet.tenancy.state import TenancyState


@attrs.frozen
class Ctx:
    backend: Backend
    state: TenancyState
    who: Principal | None


def backend_of(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def context(request: Request) -> Ctx:
    backend = backend_of(request)
    state = await backend.state()
    return Ctx(backend, state, current(request, state))


async def signed_in(request: Request) -> Ctx:
    ctx = await context(request)
    if ctx.who is None:
        raise HTTPException(401, "not signed in: POST /api/session with a token")
    return ctx
