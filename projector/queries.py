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
from collections.abc import AsyncIterator, Mapping, Sequence
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
    " cancel_reason, replay_of, replay_from_step, parent_run_id, parent_step, child_key,"
    " additional_metadata, triggered_by_cron, triggered_by_schedule, trigger_fire_at,"
    " concurrency_key, concurrency, priority"
)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}


async def _fetch(
    conn: psycopg.AsyncConnection[Any],
    query: LiteralString | sql.Composed,
    params: dict[str, Any],
    schema: str | None,
    *,
    prepare: bool | None = None,
) -> list[dict[str, Any]]:
    """``prepare=False``: never as a prepared statement (psycopg prepares a query it has run
    five times), so each run is planned for its own values: a generic plan of the run list
    cannot tell a filter matching 0.02% of the runs from one matching 80%, and may scan
    the table for it (seen at a million runs: 125 ms instead of 10)."""
    async with conn.transaction():
        if schema is not None:
            await set_search_path(conn, schema)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params, prepare=prepare)
            return [_json_ready(row) for row in await cur.fetchall()]


def _run(row: dict[str, Any]) -> dict[str, Any]:
    key, event_id = row.pop("triggered_by_key"), row.pop("triggered_by_event_id")
    row["triggered_by"] = None if key is None else {"event_key": key, "event_id": event_id}
    of, start = row.pop("replay_of"), row.pop("replay_from_step")
    row["replay_of"] = None if of is None else {"run_id": of, "from_step": start}
    parent, step, key = row.pop("parent_run_id"), row.pop("parent_step"), row.pop("child_key")
    row["parent"] = None if parent is None else {"run_id": parent, "step": step, "key": key}
    row["additional_metadata"] = row.get("additional_metadata") or {}
    # A cron's tick or a scheduled run (docs/triggers.md): which, and the time it was due.
    cron, schedule = row.pop("triggered_by_cron"), row.pop("triggered_by_schedule")
    fire_at = row.pop("trigger_fire_at")
    row["fired_by"] = (
        None
        if cron is None and schedule is None
        else {"cron": cron, "schedule_id": schedule, "fire_at": fire_at}
    )
    return row


def held_by(run: Mapping[str, Any]) -> str | None:
    """What a run waits for before its first step is queued, as a phrase ("concurrency key
    'u1' (max_runs 2, GROUP_ROUND_ROBIN)"), or None: a QUEUED run of a concurrency key none
    of whose steps was queued yet waits for its key to have room (docs/flow-control.md).
    ``run`` has its ``steps`` (each with ``queued_at``)."""
    key, spec = run.get("concurrency_key"), run.get("concurrency")
    if run.get("status") != "QUEUED" or key is None or not isinstance(spec, Mapping):
        return None
    if any(step.get("queued_at") is not None for step in run.get("steps", ())):
        return None
    limits = f"max_runs {spec.get('max_runs')}, {spec.get('limit_strategy')}"
    return f"concurrency key {key!r} ({limits})"


class CursorError(NatchetError, ValueError):
    """A paging cursor (``after``) that no list returned."""


@attrs.frozen
class Page:
    """Some rows of a list, how many match in all, and the cursor to the next rows."""

    rows: list[dict[str, Any]]
    total: int
    next: str | None  # ``after`` for the rows that follow; None on the last page
    exact: bool = True  # False: counting stopped at a limit, ``total`` is a lower bound


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


def _prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code point
    order (the "C" collation's in UTF-8); None when there is none."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates are not characters
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _aware(name: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (got {value.isoformat()})")
    return value


def _run_filter(
    *,
    tenant: str | None,
    namespace: str | None,
    status: str | None,
    workflow: str | None,
    event_key: str | None,
    created_from: dt.datetime | None,
    created_to: dt.datetime | None,
    run_id_prefix: str | None,
    metadata: Mapping[str, str] | None = None,
    concurrency_key: str | None = None,
) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The conditions of a run list, only those of the filters given (so each query names
    the index it can range-scan: see ``schema.sql``), and their parameters."""
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {}
    equal = (
        ("tenant", tenant),
        ("namespace", namespace),
        ("status", status),
        ("workflow", workflow),
        ("triggered_by_key", event_key),
        ("concurrency_key", concurrency_key),
    )
    for column, value in equal:
        if value is not None:
            conditions.append(
                sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            )
            params[column] = value
    if _aware("created_from", created_from) is not None:
        conditions.append(sql.SQL("created_at >= %(created_from)s::timestamptz"))
        params["created_from"] = created_from
    if _aware("created_to", created_to) is not None:
        conditions.append(sql.SQL("created_at < %(created_to)s::timestamptz"))
        params["created_to"] = created_to
    if metadata:
        # Containment: the runs_metadata GIN index finds them (schema.sql).
        conditions.append(sql.SQL("additional_metadata @> %(metadata)s::jsonb"))
        params["metadata"] = orjson.dumps(dict(metadata)).decode()
    prefix = (run_id_prefix or "").strip()
    if prefix:
        # Code point bounds, which the (tenant, id COLLATE "C") index ranges over.
        conditions.append(sql.SQL('id COLLATE "C" >= %(id_from)s::text'))
        params["id_from"] = prefix
        end = _prefix_end(prefix)
        if end is not None:
            conditions.append(sql.SQL('id COLLATE "C" < %(id_to)s::text'))
            params["id_to"] = end
    return conditions, params


def _where(conditions: list[sql.Composable]) -> sql.Composed:
    if not conditions:
        return sql.Composed([])
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


async def list_runs(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    status: str | None = None,
    workflow: str | None = None,
    event_key: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
    run_id_prefix: str | None = None,
    metadata: Mapping[str, str] | None = None,
    concurrency_key: str | None = None,
    limit: int = 100,
    after: str | None = None,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Runs matching every filter given, newest first (without their steps), after the
    cursor ``after`` if given. Without ``tenant``, every tenant's: a run is then told apart
    by its ``tenant`` and ``id``.

    ``event_key``: runs its event of that key started; ``created_from`` (inclusive) and
    ``created_to`` (exclusive): aware datetimes bounding ``created_at``; ``run_id_prefix``:
    runs whose id starts with it (surrounding blanks ignored, case-sensitive); ``metadata``:
    runs whose additional metadata holds every one of these key-value pairs;
    ``concurrency_key``: runs of that concurrency key (of any workflow unless ``workflow``
    is given too)."""
    conditions, params = _run_filter(
        tenant=tenant,
        namespace=namespace,
        status=status,
        workflow=workflow,
        event_key=event_key,
        created_from=created_from,
        created_to=created_to,
        run_id_prefix=run_id_prefix,
        metadata=metadata,
        concurrency_key=concurrency_key,
    )
    if after:
        at, run_id, of = _uncursor(after, (str, str, str))
        # The first conjunct is what bounds the index range; the second skips the rows of
        # the cursor's instant already shown.
        conditions.append(
            sql.SQL(
                "created_at <= %(at)s::timestamptz AND (created_at < %(at)s::timestamptz"
                " OR (id, tenant) > (%(after_id)s::text, %(after_tenant)s::text))"
            )
        )
        params.update(at=at, after_id=run_id, after_tenant=of)
    query = (
        sql.SQL("SELECT " + _RUN_COLUMNS + " FROM runs")
        + _where(conditions)
        + sql.SQL(" ORDER BY created_at DESC, id, tenant LIMIT %(limit)s")
    )
    rows = await _fetch(conn, query, {**params, "limit": limit}, schema, prepare=False)
    return [_run(row) for row in rows]


async def runs_page(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    status: str | None = None,
    workflow: str | None = None,
    event_key: str | None = None,
    created_from: dt.datetime | None = None,
    created_to: dt.datetime | None = None,
    run_id_prefix: str | None = None,
    metadata: Mapping[str, str] | None = None,
    concurrency_key: str | None = None,
    limit: int = 100,
    after: str | None = None,
    count_limit: int | None = None,
    schema: str | None = None,
) -> Page:
    """:func:`list_runs` as a :class:`Page`. Counting every match costs a scan: it is done
    only when there are more rows than ``limit`` (or a cursor was given), and with
    ``count_limit`` stops there (``total`` is then ``count_limit`` and ``exact`` False):
    what keeps a page of a million runs fast."""
    filters: dict[str, Any] = {
        "tenant": tenant,
        "namespace": namespace,
        "status": status,
        "workflow": workflow,
        "event_key": event_key,
        "created_from": created_from,
        "created_to": created_to,
        "run_id_prefix": run_id_prefix,
        "metadata": metadata,
        "concurrency_key": concurrency_key,
    }
    rows = await list_runs(conn, **filters, limit=limit + 1, after=after, schema=schema)
    if len(rows) <= limit and after is None:
        return Page(rows, len(rows), None)
    conditions, params = _run_filter(**filters)
    matches = sql.SQL("SELECT 1 FROM runs") + _where(conditions)
    if count_limit is not None:
        matches += sql.SQL(" LIMIT %(count_limit)s")
        params["count_limit"] = count_limit + 1
    query = sql.SQL("SELECT count(*) AS n FROM (") + matches + sql.SQL(") AS matches")
    total = await _count(conn, query, params, schema)
    exact = count_limit is None or total <= count_limit
    rows, more = rows[:limit], len(rows) > limit
    last = rows[-1] if rows else None
    cursor = _cursor(last["created_at"], last["id"], last["tenant"]) if more and last else None
    return Page(rows, total if exact or count_limit is None else count_limit, cursor, exact)


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
    query: LiteralString | sql.Composed,
    params: dict[str, Any],
    schema: str | None,
) -> int:
    [row] = await _fetch(conn, query, params, schema, prepare=False)
    return int(row["n"])


async def get_run(
    conn: psycopg.AsyncConnection[Any],
    run_id: str,
    *,
    tenant: str,
    schema: str | None = None,
) -> dict[str, Any] | None:
    """``tenant``'s run ``run_id`` with its steps, their attempts, their log lines and a
    durable step's waits (``waits``: each wait's conditions and, once woken, its wake; a
    ``WAITING`` step's ``waiting_for`` says what its open wait waits for);
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
        " retry_due_at, on_failure, on_success, waiting_for FROM steps"
        " WHERE tenant = %(tenant)s AND run_id = %(id)s"
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
    waits = await _fetch(
        conn,
        "SELECT step, attempt, wait_index AS index, delivery, waiting_for, conditions,"
        " worker_id, worker_name, waited_at, woken_at, condition, kind, event_key, event_id"
        " FROM step_waits WHERE tenant = %(tenant)s AND run_id = %(id)s"
        " ORDER BY attempt, wait_index",
        params,
        schema,
    )
    for step in steps:
        step["waits"] = [
            {k: w[k] for k in w if k != "step"} for w in waits if w["step"] == step["name"]
        ]
        step["attempts"] = [
            {k: a[k] for k in a if k != "step"} for a in attempts if a["step"] == step["name"]
        ]
        step["logs"] = [
            {k: g[k] for k in g if k != "step"} for g in logs if g["step"] == step["name"]
        ]
    run["steps"] = steps
    run["waiting_for"] = held_by(run)
    run["children"] = await _fetch(
        conn,
        "SELECT id, workflow, status, parent_step AS step, child_key AS key, created_at,"
        " finished_at FROM runs WHERE tenant = %(tenant)s AND parent_run_id = %(id)s"
        " ORDER BY created_at, id",
        params,
        schema,
    )
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
        "SELECT tenant, namespace, seq, key, payload, raw, valid, received_at, replay_of,"
        " additional_metadata FROM events"
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
    with_runs: bool = False,
    schema: str | None = None,
) -> Page:
    """:func:`list_events` as a :class:`Page` (counted only when there are more rows).
    ``with_runs``: each event also has ``runs``, the runs it started (``id``, ``workflow``,
    ``status``, ``created_at``; oldest first), read in the same snapshot as the events."""
    filters = {"tenant": tenant, "namespace": namespace}
    async with _one_snapshot(conn):
        rows = await list_events(
            conn, tenant=tenant, namespace=namespace, limit=limit + 1, after=after, schema=schema
        )
        if with_runs:
            await _add_runs(conn, rows[:limit], schema)
        if len(rows) <= limit and after is None:
            return Page(rows, len(rows), None)
        total = await _count(
            conn, "SELECT count(*) AS n FROM events" + _EVENT_FILTER, filters, schema
        )
    rows, more = rows[:limit], len(rows) > limit
    last = rows[-1] if rows else None
    return Page(rows, total, _cursor(last["seq"], last["tenant"]) if more and last else None)


async def _add_runs(
    conn: psycopg.AsyncConnection[Any], events: list[dict[str, Any]], schema: str | None
) -> None:
    """Set each event's ``runs``: one query over the ``(tenant, triggered_by_event_id)``
    index for the whole page."""
    started = await _fetch(
        conn,
        "SELECT r.tenant, r.triggered_by_event_id, r.id, r.workflow, r.status, r.created_at"
        " FROM unnest(%(tenants)s::text[], %(ids)s::text[]) AS e(tenant, id)"
        " JOIN runs r ON r.tenant = e.tenant AND r.triggered_by_event_id = e.id"
        " ORDER BY r.created_at, r.id",
        {"tenants": [e["tenant"] for e in events], "ids": [e["id"] for e in events]},
        schema,
    )
    by_event: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in started:
        key = (run.pop("tenant"), run.pop("triggered_by_event_id"))
        by_event.setdefault(key, []).append(run)
    for event in events:
        event["runs"] = by_event.get((event["tenant"], event["id"]), [])


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
