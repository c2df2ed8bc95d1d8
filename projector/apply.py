"""Applying log records to the read model, with the checkpoint, in one transaction.

The batch is first sent in one pipeline. Should Postgres refuse a value the checks in
:mod:`projector._values` let through, the transaction is redone one record per savepoint
and each record Postgres refuses becomes a ``rejections`` row: a bad message is recorded
and skipped, it never blocks the messages behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors

import schemas
from eventstore import Record
from projector.migrations import set_search_path
from projector.plan import Stmt, plan, rejection

log = logging.getLogger(__name__)

# What a bad value makes Postgres say (as opposed to a lost connection or a bug of ours).
RECORD_ERRORS: tuple[type[psycopg.Error], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.errors.ProgramLimitExceeded,
)


def checkpoint_stmt(tenant: str, seq: int) -> Stmt:
    return Stmt(
        "INSERT INTO projector_checkpoints (stream, last_seq) VALUES (%(stream)s, %(seq)s)"
        " ON CONFLICT (stream) DO UPDATE"
        " SET last_seq = GREATEST(projector_checkpoints.last_seq, excluded.last_seq)",
        {"stream": schemas.stream_name(tenant), "seq": seq},
    )


async def _execute(conn: psycopg.AsyncConnection[Any], stmts: Sequence[Stmt]) -> None:
    for stmt in stmts:
        await conn.execute(stmt.sql, stmt.params)


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
    plans = [(record, plan(tenant, record)) for record in records]
    tail = [checkpoint_stmt(tenant, max(r.seq for r in records))] if checkpoint else []
    try:
        async with conn.transaction():
            if schema is not None:
                await set_search_path(conn, schema)
            async with conn.pipeline():
                for _, stmts in plans:
                    await _execute(conn, stmts)
                await _execute(conn, tail)
        return
    except RECORD_ERRORS as exc:
        log.warning(
            "postgres refused a record of %s (%s); applying one by one",
            tenant,
            exc.diag.message_primary or exc,
        )
    async with conn.transaction():
        if schema is not None:
            await set_search_path(conn, schema)
        for record, stmts in plans:
            try:
                async with conn.transaction():
                    await _execute(conn, stmts)
            except RECORD_ERRORS as exc:
                # The primary message only: the detail can name row positions, which a
                # rebuild would not reproduce.
                reason = f"postgres refused the message: {exc.diag.message_primary or exc}"
                log.warning("rejected %s seq %d: %s", record.subject, record.seq, reason)
                await _execute(conn, [rejection(tenant, record, reason)])
        await _execute(conn, tail)
