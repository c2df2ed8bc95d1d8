"""Applying log records to the read model, with the checkpoint, in one transaction.

A batch is applied set-based: each record is planned into operations (:mod:`projector.plan`,
pure), the rows of every run the batch names are loaded at once, the operations are folded
into them in record order (:mod:`projector.fold`, pure), and what changed is written with
one statement per table (:mod:`projector.store`): a handful of statements and round trips
per batch, whatever its size. The result is the same as applying the records one by one, in
whatever batches: idempotent, every row carrying the ``last_seq`` of the record that last
changed it.

Should Postgres refuse a value the checks in :mod:`projector._values` let through, the
transaction is redone with the batch split in halves, each half in a savepoint, down to the
single records Postgres refuses, which become ``rejections`` rows: a bad message is recorded
and skipped, it never blocks the messages behind it, and costs a few savepoints, not one
round trip per record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors

from eventstore import Record
from projector import ops, store
from projector.fold import Fold
from projector.migrations import set_search_path
from projector.plan import plan, rejection

log = logging.getLogger(__name__)

# What a bad value makes Postgres say (as opposed to a lost connection or a bug of ours).
RECORD_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)

Planned = tuple[Record, list[ops.Op]]


def _run_ids(planned: Sequence[Planned]) -> list[str]:
    """Every run the batch's operations name: the rows to load."""
    return sorted({op.run_id for _, ops_ in planned for op in ops_ if isinstance(op, ops.RunOp)})


async def _apply(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    planned: Sequence[Planned],
    checkpoint: int | None = None,
) -> None:
    """Load the batch's runs, fold its operations, write what changed (set-based)."""
    waited = sorted(
        {o.run_id for _, p in planned for o in p if isinstance(o, ops.Waiting | ops.Woken)}
    )
    fold = await store.load(conn, tenant, _run_ids(planned), waited)
    crons = sorted(
        {(o.namespace, o.name) for _, p in planned for o in p if isinstance(o, ops.CronChange)}
    )
    schedules = sorted(
        {(o.namespace, o.id) for _, p in planned for o in p if isinstance(o, ops.ScheduleChange)}
    )
    if crons or schedules:
        loaded = await store.load_triggers(conn, tenant, crons, schedules)
        fold.crons = {(c.namespace, c.name): c for c in loaded[0]}
        fold.schedules = {(s.namespace, s.id): s for s in loaded[1]}
    for _, ops_ in planned:
        for op in ops_:
            fold.apply(op)
    await store.write(conn, tenant, fold, checkpoint)


async def _begin(conn: psycopg.AsyncConnection[Any], tenant: str, schema: str | None) -> None:
    if schema is not None:
        await set_search_path(conn, schema)
    await store.lock(conn, tenant)


async def apply_records(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    records: Sequence[Record],
    *,
    checkpoint: bool = True,
    schema: str | None = None,
) -> None:
    """Apply ``records`` (and, with ``checkpoint``, the stream's new high-water mark) in one
    transaction. Idempotent: re-applying records already applied changes nothing, in
    whatever order or batches they come again.

    ``schema`` sets the ``search_path`` for the transaction; without it the connection's
    own applies.
    """
    if not records:
        return
    planned = [(record, plan(tenant, record)) for record in records]
    await apply_planned(conn, tenant, planned, checkpoint=checkpoint, schema=schema)


async def apply_planned(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    planned: Sequence[Planned],
    *,
    checkpoint: bool = True,
    schema: str | None = None,
) -> None:
    """:func:`apply_records` of records already planned (each with ``plan(tenant, record)``):
    a reader may plan the next batch while this one is written."""
    if not planned:
        return
    high = max(r.seq for r, _ in planned) if checkpoint else None
    try:
        async with conn.transaction():
            await _begin(conn, tenant, schema)
            await _apply(conn, tenant, planned, high)
        return
    except RECORD_ERRORS as exc:
        log.warning(
            "postgres refused a record of %s (%s); finding it",
            tenant,
            exc.diag.message_primary or exc,
        )
    async with conn.transaction():
        await _begin(conn, tenant, schema)
        await _isolate(conn, tenant, planned)
        await store.write(conn, tenant, Fold((), (), ()), high)


async def _isolate(
    conn: psycopg.AsyncConnection[Any], tenant: str, planned: Sequence[Planned]
) -> None:
    """Apply ``planned`` in halves, each in a savepoint, down to the single records Postgres
    refuses: those become rejections. Records keep their order."""
    half = len(planned) // 2
    for part in (planned[:half], planned[half:]) if half else (planned,):
        try:
            async with conn.transaction():
                await _apply(conn, tenant, part)
        except RECORD_ERRORS as exc:
            if len(part) > 1:
                await _isolate(conn, tenant, part)
                continue
            record = part[0][0]
            # The primary message only: the detail can name row positions, which a
            # rebuild would not reproduce.
            reason = f"postgres refused the message: {exc.diag.message_primary or exc}"
            log.warning("rejected %s seq %d: %s", record.subject, record.seq, reason)
            fold = Fold((), (), ())
            fold.apply(rejection(record, reason))
            await store.write(conn, tenant, fold)
