"""The read side: what the CLI and the dashboard ask of the projection. JSON-ready output
(timestamps as ISO-8601 UTC strings).

Lists page by keyset, not offset: a :class:`Page` ends with a cursor (``next``), the sort
key of its last row, opaque to callers; passed back as ``after`` it continues exactly after
that row, however many rows arrived meanwhile (they sort before it: newest first)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any, LiteralString

import attrs
import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projector.migrations import DEFAULT_SCHEMA, TABLES, set_search_path
from schemas.errors import NatchetError

_RUN_COLUMNS = (
    "id, tenant, namespace, workflow, workflow_version, status, input, triggered_by_key,"
    " triggered_by_event_id, error, created_at, started_at, finished_at, cancel_requested_at,"
    " cancel_reason, replay_of, replay_from_step"
)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}


async def _fetch(
    conn: psycopg.AsyncConnection[Any],
    query: LiteralString,
    params: dict[str, Any],
    schema: str | None,
) -> list[dict[str, Any]]:
    async with conn.transaction():
        if schema is not None:
            await set_search_path(conn, schema)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return [_json_ready(row) for row in await cur.fetchall()]


def _run(row: dict[str, Any]) -> dict[str, Any]:
    key, event_id = row.pop("triggered_by_key"), row.pop("triggered_by_event_id")
    row["triggered_by"] = None if key is None else {"event_key": key, "event_id": event_id}
    of, start = row.pop("replay_of"), row.pop("replay_from_step")
    row["replay_of"] = None if of is None else {"run_id": of, "from_step": start}
    return row


class CursorError(NatchetError, ValueError):
    """A paging cursor (``after``) that no list returned."""


@attrs.frozen
class Page:
    """Some rows of a list, how many match in all, and the cursor to the next rows."""

    rows: list[dict[str, Any]]
    total: int
    next: str | None  # ``after`` for the rows that follow; None on the last page


def _cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def _uncursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or [type(k) for k in key] != list(kinds):
        raise CursorError(f"{cursor!r} is not a cursor a list returned (its `next`)")
    return key


_RUN_FILTER = (
    " WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
    " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
    " AND (%(status)s::text IS NULL OR status = %(status)s)"
    " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
)


async def list_runs(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 100,
    after: str | None = None,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Runs matching every filter given, newest first (without their steps), after the
    cursor ``after`` if given. Without ``tenant``, every tenant's: a run is then told apart
    by its ``tenant`` and ``id``."""
    filters = {"tenant": tenant, "namespace": namespace, "status": status, "workflow": workflow}
    at, run_id, of = _uncursor(after, (str, str, str)) if after else (None, None, None)
    rows = await _fetch(
        conn,
        "SELECT " + _RUN_COLUMNS + " FROM runs" + _RUN_FILTER + " AND (%(at)s::timestamptz IS NULL"
        " OR created_at < %(at)s OR (created_at = %(at)s AND (id, tenant) > (%(id)s, %(of)s)))"
        " ORDER BY created_at DESC, id, tenant LIMIT %(limit)s",
        {**filters, "at": at, "id": run_id, "of": of, "limit": limit},
        schema,
    )
    return [_run(row) for row in rows]


async def runs_page(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 100,
    after: str | None = None,
    schema: str | None = None,
) -> Page:
    """:func:`list_runs` as a :class:`Page`. Counting every match costs a scan: it is done
    only when there are more rows than ``limit``."""
    filters = {"tenant": tenant, "namespace": namespace, "status": status, "workflow": workflow}
    rows = await list_runs(
        conn,
        tenant=tenant,
        namespace=namespace,
        status=status,
        workflow=workflow,
        limit=limit + 1,
        after=after,
        schema=schema,
    )
    if len(rows) <= limit and after is None:
        return Page(rows, len(rows), None)
    total = await _count(conn, "SELECT count(*) AS n FROM runs" + _RUN_FILTER, filters, schema)
    rows, more = rows[:limit], len(rows) > limit
    last = rows[-1] if rows else None
    cursor = _cursor(last["created_at"], last["id"], last["tenant"]) if more and last else None
    return Page(rows, total, cursor)


async def select_runs(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str,
    namespace: str | None = None,
    statuses: Sequence[str] | None = None,
    workflow: str | None = None,
    since: dt.datetime | None = None,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Every run of ``tenant`` matching every filter given (``statuses``: any of them;
    ``since``: created then or later), oldest first, not paged: what a bulk action acts on.
    Only the columns that say which run it is (``id``, ``namespace``, ``workflow``,
    ``status``, ``created_at``); the tenant leads the ``(tenant, namespace, status)`` index."""
    return await _fetch(
        conn,
        "SELECT id, namespace, workflow, status, created_at FROM runs WHERE tenant = %(tenant)s"
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))"
        " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
        " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)"
        " ORDER BY created_at, id",
        {
            "tenant": tenant,
            "namespace": namespace,
            "statuses": None if statuses is None else list(statuses),
            "workflow": workflow,
            "since": since,
        },
        schema,
    )


async def _count(
    conn: psycopg.AsyncConnection[Any],
    query: LiteralString,
    params: dict[str, Any],
    schema: str | None,
) -> int:
    [row] = await _fetch(conn, query, params, schema)
    return int(row["n"])


async def get_run(
    conn: psycopg.AsyncConnection[Any],
    run_id: str,
    *,
    tenant: str,
    schema: str | None = None,
) -> dict[str, Any] | None:
    """``tenant``'s run ``run_id`` with its steps, their attempts and their log lines;
    ``None`` if that tenant has no such run (run ids are only unique within a tenant: another
    tenant's run of the same id is never returned, nor anything under it).

    Steps come in the order they were queued, the on-failure step (``on_failure``) last.
    Read in one snapshot: a run the projector writes meanwhile is seen as one of its
    batches left it, never its run row from before a batch and its attempts from after."""
    async with _one_snapshot(conn):
        return await _get_run(conn, run_id, tenant, schema)


@contextlib.asynccontextmanager
async def _one_snapshot(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Several reads in one transaction that sees one snapshot (REPEATABLE READ), unless
    the caller's transaction is already open (then it is the caller's)."""
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    async with conn.transaction():
        if idle:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


async def _get_run(
    conn: psycopg.AsyncConnection[Any], run_id: str, tenant: str, schema: str | None
) -> dict[str, Any] | None:
    params = {"tenant": tenant, "id": run_id}
    runs = await _fetch(
        conn,
        "SELECT " + _RUN_COLUMNS + " FROM runs WHERE tenant = %(tenant)s AND id = %(id)s",
        params,
        schema,
    )
    if not runs:
        return None
    run = _run(runs[0])
    steps = await _fetch(
        conn,
        "SELECT name, parents, status, output, error, queued_at, started_at, finished_at,"
        " retry_due_at, on_failure FROM steps WHERE tenant = %(tenant)s AND run_id = %(id)s"
        " ORDER BY on_failure, queued_at NULLS LAST, name",
        params,
        schema,
    )
    attempts = await _fetch(
        conn,
        "SELECT step, attempt, delivery, worker_id, worker_name, status, started_at,"
        " finished_at, error FROM attempts WHERE tenant = %(tenant)s AND run_id = %(id)s"
        " ORDER BY attempt, delivery",
        params,
        schema,
    )
    logs = await _fetch(
        conn,
        "SELECT step, at, line, attempt FROM step_logs"
        " WHERE tenant = %(tenant)s AND run_id = %(id)s ORDER BY seq",
        params,
        schema,
    )
    for step in steps:
        step["attempts"] = [
            {k: a[k] for k in a if k != "step"} for a in attempts if a["step"] == step["name"]
        ]
        step["logs"] = [
            {k: g[k] for k in g if k != "step"} for g in logs if g["step"] == step["name"]
        ]
    run["steps"] = steps
    return run


_EVENT_FILTER = (
    " WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
    " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
)


async def list_events(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    limit: int = 100,
    after: str | None = None,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Events, newest first, after the cursor ``after`` if given. ``id`` is the event's
    stream sequence, as runs refer to it."""
    seq, of = _uncursor(after, (int, str)) if after else (None, None)
    rows = await _fetch(
        conn,
        "SELECT tenant, namespace, seq, key, payload, raw, valid, received_at, replay_of"
        " FROM events"
        + _EVENT_FILTER
        + " AND (%(seq)s::bigint IS NULL OR seq < %(seq)s OR (seq = %(seq)s AND tenant > %(of)s))"
        " ORDER BY seq DESC, tenant LIMIT %(limit)s",
        {"tenant": tenant, "namespace": namespace, "seq": seq, "of": of, "limit": limit},
        schema,
    )
    return [{"id": str(row["seq"]), **row} for row in rows]


async def events_page(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    limit: int = 100,
    after: str | None = None,
    schema: str | None = None,
) -> Page:
    """:func:`list_events` as a :class:`Page` (counted only when there are more rows)."""
    filters = {"tenant": tenant, "namespace": namespace}
    rows = await list_events(
        conn, tenant=tenant, namespace=namespace, limit=limit + 1, after=after, schema=schema
    )
    if len(rows) <= limit and after is None:
        return Page(rows, len(rows), None)
    total = await _count(conn, "SELECT count(*) AS n FROM events" + _EVENT_FILTER, filters, schema)
    rows, more = rows[:limit], len(rows) > limit
    last = rows[-1] if rows else None
    return Page(rows, total, _cursor(last["seq"], last["tenant"]) if more and last else None)


async def dump_tables(
    conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection table in ``schema``, in primary-key order: two
    projections of the same log dump equal."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with conn.transaction(), conn.cursor() as cur:
        for table, key in TABLES.items():
            query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
                sql.Identifier(schema),
                sql.Identifier(table),
                sql.SQL(", ").join(sql.Identifier(c) for c in key),
            )
            await cur.execute(query)
            out[table] = list(await cur.fetchall())
    return out
