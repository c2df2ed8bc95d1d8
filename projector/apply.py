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
import typing
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


# The operation classes that name a run, a cron, a schedule, or none of them: looked up by
# type, once per operation (``isinstance`` against the ``RunOp`` union tries its ten classes,
# three passes over a batch of 10,000 records cost a rebuild ~1.7 us a message).
_RUN_TYPES: frozenset[type] = frozenset(typing.get_args(ops.RunOp))
_OTHER_TYPES: frozenset[type] = frozenset({ops.Event, ops.Workflow, ops.Rejection})
_WAIT_TYPES: frozenset[type] = frozenset({ops.Waiting, ops.Woken})


def _names(
    planned: Sequence[Planned],
) -> tuple[list[str], list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Every run, run with a durable wait or wake, cron and scheduled run the batch's
    operations name, sorted: the rows to load."""
    runs: set[str] = set()
    waited: set[str] = set()
    crons: set[tuple[str, str]] = set()
    schedules: set[tuple[str, str]] = set()
    run_types, other_types, waits = _RUN_TYPES, _OTHER_TYPES, _WAIT_TYPES
    for _, ops_ in planned:
        for op in ops_:
            kind = type(op)
            if kind in run_types:
                runs.add(op.run_id)  # type: ignore[union-attr,arg-type]
                if kind in waits:
                    waited.add(op.run_id)  # type: ignore[union-attr,arg-type]
            elif kind in other_types:
                continue
            elif isinstance(op, ops.RunOp):  # a subclass: as isinstance says
                runs.add(op.run_id)
                if isinstance(op, ops.Waiting | ops.Woken):
                    waited.add(op.run_id)
            elif isinstance(op, ops.CronChange):
                crons.add((op.namespace, op.name))
            elif isinstance(op, ops.ScheduleChange):
                schedules.add((op.namespace, op.id))
    return sorted(runs), sorted(waited), sorted(crons), sorted(schedules)


async def _apply(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    planned: Sequence[Planned],
    checkpoint: int | None = None,
) -> None:
    """Load the batch's runs, fold its operations, write what changed (set-based)."""
    run_ids, waited, crons, schedules = _names(planned)
    fold = await store.load(conn, tenant, run_ids, waited)
    if crons or schedules:
        loaded = await store.load_triggers(conn, tenant, crons, schedules)
        fold.crons = {(c.namespace, c.name): c for c in loaded[0]}
        fold.schedules = {(s.namespace, s.id): s for s in loaded[1]}
    for _, ops_ in planned:
        for op in ops_:
            fold.apply(op)
    await store.write(conn, tenant, fold, checkpoint)


async def _begin(
    conn: psycopg.AsyncConnection[Any], tenant: str, schema: str | None, lock: bool = True
) -> None:
    if schema is not None:
        await set_search_path(conn, schema)
    if lock:
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
    lock: bool = True,
) -> None:
    """:func:`apply_records` of records already planned (each with ``plan(tenant, record)``):
    a reader may plan the next batch while this one is written.

    Without ``lock`` the tenant's projector lock is not taken: only for writers of disjoint
    rows of a schema no projector writes (a rebuild's shares, :mod:`projector.shares`)."""
    if not planned:
        return
    high = max(r.seq for r, _ in planned) if checkpoint else None
    try:
        async with conn.transaction():
            await _begin(conn, tenant, schema, lock)
            await _apply(conn, tenant, planned, high)
        return
    except RECORD_ERRORS as exc:
        log.warning(
            "postgres refused a record of %s (%s); finding it",
            tenant,
            exc.diag.message_primary or exc,
        )
    async with conn.transaction():
        await _begin(conn, tenant, schema, lock)
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
