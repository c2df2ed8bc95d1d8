"""Live updates as Server-Sent Events, fed by the tenant's log: every run message appended
(a run requested, created, a step assigned, a result, the run finished...) is told as one
``run`` event ``{"run_id", "namespace", "kind", "seq"}``; the page then reads the read model
again. A comment line every few seconds keeps proxies from closing an idle stream.

A page asks from the first message its read model may not hold (``?from=``: the projector's
checkpoint when the page was read, plus one), so that nothing appended between the page's
read and the stream's start goes untold (a run created meanwhile would otherwise appear only
at its next message). Each event carries its sequence as its SSE ``id``: a browser that
reconnects sends it back (``Last-Event-ID``) and goes on after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from eventstore import Tail, last_seq
from natchet.dashboard.auth import require_tenant
from natchet.dashboard.deps import Ctx, signed_in
from schemas.subjects import MAX_SEQ, sequence, stream_name

router = APIRouter(prefix="/api")
KEEPALIVE_S = 15.0
# How far back a stream may start: a page older than this many messages is stale whatever it
# is told, and a tenant must not make the server read its whole log for one stream.
MAX_BEHIND = 10_000


def run_event(subject: str, seq: int) -> bytes | None:
    """The SSE frame for one log record, if it is a run's (``<t>.<ns>.runs.<id>.<kind>``)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[2] != "runs":
        return None
    body = {"run_id": parts[3], "namespace": parts[1], "kind": parts[4], "seq": seq}
    return b"id: %d\nevent: run\ndata: " % seq + orjson.dumps(body) + b"\n\n"


def start_at(last: int, asked: int | None, last_event_id: str | None) -> int:
    """The first sequence to tell: after the last event the browser saw, else ``asked``,
    else what comes next; never more than :data:`MAX_BEHIND` back."""
    seen = sequence(last_event_id or "")
    first = seen + 1 if seen is not None else asked if asked is not None else last + 1
    return max(first, last + 1 - MAX_BEHIND, 1)


async def follow(
    request: Request, ctx: Ctx, tenant: str, asked: int | None
) -> AsyncIterator[bytes]:
    nc = await ctx.backend.log_nc(tenant)
    start = start_at(await last_seq(nc, tenant), asked, request.headers.get("last-event-id"))
    tail = Tail(nc, stream_name(tenant), start, subjects=[f"{tenant}.*.runs.*.*"], idle_poll_s=0.5)
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    try:
        yield b"retry: 2000\n: following the log\n\n"
        while not await request.is_disconnected():
            batch = await tail.next_batch()
            frames = [f for r in batch if (f := run_event(r.subject, r.seq)) is not None]
            if frames:
                yield b"".join(frames)
                quiet_since = loop.time()
            elif loop.time() - quiet_since > KEEPALIVE_S:
                yield b": keepalive\n\n"
                quiet_since = loop.time()
    finally:
        await tail.close()


@router.get("/tenants/{tenant}/live", summary="Server-Sent Events: the tenant's run changes")
async def live(
    tenant: str,
    request: Request,
    ctx: Annotated[Ctx, Depends(signed_in)],
    from_: Annotated[int | None, Query(alias="from", ge=1, le=MAX_SEQ)] = None,
) -> StreamingResponse:
    """``from``: the first log sequence to tell (default: what comes next)."""
    assert ctx.who is not None
    tenant = require_tenant(ctx.who, ctx.state, tenant)
    return StreamingResponse(
        follow(request, ctx, tenant, from_),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
