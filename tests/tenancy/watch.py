"""Watching for what must not happen: a tenant's streams, consumers and rows, and the
engine's records, compared before and after an attack.

A check that something did not happen must be able to fail: :func:`unchanged` first makes
sure the server has processed everything the attacker sent (a round trip on the attacker's
own connection), then keeps comparing for a bounded window, failing on the first change,
so an injection that lands late is caught too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import nats.errors
import psycopg
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from eventstore.snapshot import snapshot_bucket
from eventstore.system import system_last_seq
from natchet.engine import Engine
from projector import list_runs
from schemas.subjects import live_stream_name, stream_name, tasks_stream_name

WINDOW_S = 0.6


@attrs.frozen
class TenantView:
    """What an attack on a tenant could change."""

    # (stream, messages, first seq, last seq, config)
    streams: tuple[tuple[str, int, int, int, str], ...]
    consumers: tuple[tuple[str, str, str], ...]  # (stream, consumer, config)
    runs: tuple[tuple[str, str], ...]  # (run id, status) in Postgres


async def tenant_view(engine: Engine, db: psycopg.AsyncConnection[Any], tenant: str) -> TenantView:
    assert engine.provisioner is not None
    js = engine.provisioner.logs[tenant].jetstream()
    streams: list[tuple[str, int, int, int, str]] = []
    consumers: list[tuple[str, str, str]] = []
    # Heartbeats come and go, and the dispatcher replaces its snapshots: of those two
    # streams, only that they exist with their settings.
    only_settings = (live_stream_name(tenant), f"OBJ_{snapshot_bucket(tenant)}")
    for name in (stream_name(tenant), tasks_stream_name(tenant), *only_settings):
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            streams.append((name, -1, -1, -1, "MISSING"))
            continue
        if name in only_settings:
            streams.append((name, 0, 0, 0, repr(info.config)))
            continue
        state = info.state
        streams.append((name, state.messages, state.first_seq, state.last_seq, repr(info.config)))
        for consumer in await js.consumers_info(name):
            # The engine's own readers (the projector's tail, a replay) are ephemeral pull
            # consumers that come and go; every durable one, and any push consumer (which
            # delivers somewhere), counts.
            if consumer.config.durable_name or consumer.config.deliver_subject:
                consumers.append((name, consumer.name, repr(consumer.config)))
    runs = tuple(sorted((r["id"], r["status"]) for r in await list_runs(db, tenant=tenant)))
    return TenantView(tuple(streams), tuple(sorted(consumers)), runs)


async def system_view(engine: Engine) -> tuple[int, int, int]:
    """The engine's records: the system stream's end, and the tenants and tokens it folds."""
    assert engine.nc is not None and engine.tenancy is not None
    state = engine.tenancy.view.state
    return await system_last_seq(engine.nc), len(state.tenants), len(state.tokens)


async def round_trip(nc: NATS) -> None:
    """Everything ``nc`` sent has been processed by the server."""
    # The attacker may have been disconnected: then nothing more of it is coming.
    with contextlib.suppress(nats.errors.Error):
        await nc.flush(timeout=5)


async def unchanged(
    attacker: NATS,
    look: Callable[[], Awaitable[object]],
    before: object,
    *,
    window_s: float = WINDOW_S,
) -> None:
    """``look()`` still equals ``before`` after the server has processed the attack, and
    stays so for ``window_s`` (late answers and injections included)."""
    await round_trip(attacker)
    loop = asyncio.get_running_loop()
    end = loop.time() + window_s
    while True:
        now = await look()
        assert now == before, f"changed by the attack:\nbefore {before!r}\nafter  {now!r}"
        if loop.time() >= end:
            return
        await asyncio.sleep(0.05)
