"""The read side: what the CLI and the dashboard ask of the projection. JSON-ready output
(timestamps as ISO-8601 UTC strings)."""

from __future__ import annotations

import datetime as dt
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projector.migrations import DEFAULT_SCHEMA, TABLES, set_search_path

_RUN_COLUMNS = (
    "id, tenant, namespace, workflow, workflow_version, status, input, triggered_by_key,"
    " triggered_by_event_id, error, created_at, started_at, finished_at, cancel_requested_at,"
    " cancel_reason"
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
    return row


def _of_step(rows: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [
        {k: val for k, val in row.items() if k != "step"} for row in rows if row["step"] == step
    ]


async def list_runs(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    status: str | None = None,
    workflow: str | None = None,
    limit: int = 100,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Runs matching every filter given, newest first (without their steps). Without
    ``tenant``, every tenant's: a run is then told apart by its ``tenant`` and ``id``."""
    rows = await _fetch(
        conn,
        "SELECT " + _RUN_COLUMNS + " FROM runs"
        " WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)"
        " ORDER BY created_at DESC, id, tenant LIMIT %(limit)s",
        {
            "tenant": tenant,
            "namespace": namespace,
            "status": status,
            "workflow": workflow,
            "limit": limit,
        },
        schema,
    )
    return [_run(row) for row in rows]


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

    Steps come in the order they were queued, the on-failure step (``on_failure``) last."""
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


async def list_events(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant: str | None = None,
    namespace: str | None = None,
    limit: int = 100,
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Events, newest first. ``id`` is the event's stream sequence, as runs refer to it."""
    rows = await _fetch(
        conn,
        "SELECT tenant, namespace, seq, key, payload, raw, valid, received_at FROM events"
        " WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
        " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s)"
        " ORDER BY seq DESC, tenant LIMIT %(limit)s",
        {"tenant": tenant, "namespace": namespace, "limit": limit},
        schema,
    )
    return [{"id": str(row["seq"]), **row} for row in rows]


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
