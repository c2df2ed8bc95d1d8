"""Applying a stretch of a tenant's log to a schema, as fast as the log can be read: what
``natchet replay`` rebuilds with (:mod:`projector.replay`).

It is the live projector's fold, batch by batch (:func:`~projector.apply.apply_planned`),
with the reading and planning of the next batches done while Postgres writes the current
one: a reader task reads the log in order and plans each record
(:func:`~projector.fastplan.plan_fast`: :func:`~projector.plan.plan`'s operations, the
usual records by a shorter path), handing whole batches over a short queue to the writer.
Postgres and Python then work at the same time, each on its own core, instead of each
waiting for the other (bench/rebuild.py: a rebuild waited on Postgres about 40% of its
time). What is applied, in what order and batches, is the same as reading and applying in
turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg

import eventstore
import schemas
from eventstore import Connection, Record
from projector import ops
from projector import shares as shares_module
from projector.apply import Planned, apply_planned
from projector.fastplan import plan_fast

AHEAD = 2  # batches read and planned ahead of the one being written
# Records a transaction. Larger than the live projector's 500 (which is bounded by latency,
# not cost): Postgres works ~4x less per message with batches of 5,000 than of 500 (a run's
# rows are loaded and written again in every batch its messages fall in), and 10,000 cut
# it by another third on a log of 1M messages (bench/rebuild.py, docs/benchmarks.md).
BATCH = 10_000


Batch = list[Planned]

# The collector's first threshold while a rebuild runs (the interpreter's default is 700).
# A rebuild keeps some 30,000 records and their operations alive (the batches queued and
# the one being written), and every few hundred allocations the collector scanned them
# again: 9 s of a 47 s rebuild's CPU of the 1M bench log went to it, 4 s with this
# (gc.callbacks, a busy machine; docs/benchmarks.md). Rebuilds allocate few cycles; they
# are still collected.
GC_THRESHOLD = 20_000
# Rebuilds running in this process, and the first threshold from before the first of them.
_gc = {"rebuilds": 0, "threshold": 0}


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Raise the collector's first threshold while any rebuild runs, then put it back."""
    if _gc["rebuilds"] == 0:
        _gc["threshold"] = gc.get_threshold()[0]
        gc.set_threshold(max(GC_THRESHOLD, _gc["threshold"]), *gc.get_threshold()[1:])
    _gc["rebuilds"] += 1
    try:
        yield
    finally:
        _gc["rebuilds"] -= 1
        if _gc["rebuilds"] == 0:
            gc.set_threshold(_gc["threshold"], *gc.get_threshold()[1:])


async def _read(
    records: AsyncIterator[Record],
    tenant: str,
    batch_size: int,
    out: asyncio.Queue[Batch | Exception | None],
    check: Callable[[list[ops.Op]], None] | None = None,
) -> None:
    """Plan ``records`` into batches on ``out``: ``None`` after the last, or the error that
    ended the reading (or that ``check`` raised on a record's operations)."""
    batch: Batch = []
    try:
        async for record in records:
            planned = plan_fast(tenant, record)
            if check is not None:
                check(planned)
            batch.append((record, planned))
            if len(batch) >= batch_size:
                await out.put(batch)
                batch = []
    except Exception as exc:  # handed to the writer, which raises it
        await out.put(exc)
        return
    if batch:
        await out.put(batch)
    await out.put(None)


async def rebuild(
    conn: psycopg.AsyncConnection[Any],
    nc: Connection,
    tenant: str,
    schema: str,
    *,
    start_seq: int = 1,
    until_seq: int,
    batch_size: int = BATCH,
    on_batch: Callable[[int], None] | None = None,
    shares: int = 1,
) -> None:
    """Apply ``tenant``'s log from ``start_seq`` through ``until_seq`` to ``schema`` (which
    :func:`~projector.migrations.migrate` made), in batches of ``batch_size``, as the live
    projector does; ``on_batch(n)`` after each batch of ``n`` messages.

    With ``shares`` above 1 the runs are split among that many processes
    (:mod:`projector.shares`): for a fresh schema only, which nothing else writes meanwhile,
    and whose creation is committed."""
    if until_seq < start_seq:
        return
    records = eventstore.read_to_end(
        nc,
        schemas.stream_name(tenant),
        start_seq=start_seq,
        until_seq=until_seq,
        batch_size=batch_size,
        raw=True,
    )
    if shares > 1:
        with _fewer_collections():
            await shares_module.rebuild_in_shares(
                conn, records, tenant, schema, shares=shares, batch_size=batch_size,
                on_batch=on_batch,
            )  # fmt: skip
        return
    await apply_stream(conn, tenant, schema, records, batch_size=batch_size, on_batch=on_batch)


async def apply_stream(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    schema: str,
    records: AsyncIterator[Record],
    *,
    batch_size: int = BATCH,
    on_batch: Callable[[int], None] | None = None,
    checkpoint: bool = True,
    lock: bool = True,
    check: Callable[[list[ops.Op]], None] | None = None,
) -> None:
    """Plan and apply ``records`` (in log order) to ``schema`` in batches of ``batch_size``,
    the next batches planned while Postgres writes the current one. ``checkpoint`` and
    ``lock`` as :func:`~projector.apply.apply_planned` takes them; ``check`` is called with
    each record's operations, and what it raises ends the rebuild."""
    queue: asyncio.Queue[Batch | Exception | None] = asyncio.Queue(AHEAD)
    reader = asyncio.ensure_future(_read(records, tenant, batch_size, queue, check))
    try:
        with _fewer_collections():
            while (batch := await queue.get()) is not None:
                if isinstance(batch, Exception):
                    raise batch
                await apply_planned(
                    conn, tenant, batch, schema=schema, checkpoint=checkpoint, lock=lock
                )
                if on_batch is not None:
                    on_batch(len(batch))
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
