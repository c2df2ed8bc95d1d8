"""Live updates as Server-Sent Events, fed by the tenant's log: every run message appended
(a run requested, created, a step assigned, a result, the run finished...) is told as one
``run`` event ``{"run_id", "namespace", "kind", "seq"}``; the page then reads the read model
again. A comment line every few seconds keeps proxies from closing an idle stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from eventstore import Tail, last_seq
from natchet.dashboard.auth import require_tenant
from natchet.dashboard.deps import Ctx, signed_in
from schemas.subjects import stream_name

router = APIRouter(prefix="/api")
KEEPALIVE_S = 15.0


def run_event(subject: str, seq: int) -> bytes | None:
    """The SSE frame for one log record, if it is a run's (``<t>.<ns>.runs.<id>.<kind>``)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[2] != "runs":
        return None
    body = {"run_id": parts[3], "namespace": parts[1], "kind": parts[4], "seq": seq}
    return b"event: run\ndata: " + orjson.dumps(body) + b"\n\n"


async def follow(request: Request, ctx: Ctx, tenant: str) -> AsyncIterator[bytes]:
    nc = await ctx.backend.log_nc(tenant)
    start = await last_seq(nc, tenant) + 1
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
    tenant: str, request: Request, ctx: Annotated[Ctx, Depends(signed_in)]
) -> StreamingResponse:
    assert ctx.who is not None
    tenant = require_tenant(ctx.who, ctx.state, tenant)
    return StreamingResponse(
        follow(request, ctx, tenant),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
