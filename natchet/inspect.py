"""``natchet runs ...`` and ``natchet events ...``: read the projection in Postgres."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from natchet.config import layered_env, resolve_tenant
from projector import get_run, list_events, list_runs


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


async def runs_list(
    database_url: str,
    *,
    as_json: bool,
    status: str | None,
    workflow: str | None,
    tenant: str | None,
    limit: int,
) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        runs = await list_runs(conn, tenant=tenant, status=status, workflow=workflow, limit=limit)
    if as_json:
        print(_dump(runs))
        return 0
    if not runs:
        print("no runs")
        return 0
    print(f"{'ID':36}  {'WORKFLOW':20}  {'STATUS':9}  CREATED")
    for run in runs:
        print(f"{run['id']:36}  {run['workflow']:20}  {run['status']:9}  {run['created_at']}")
    return 0


async def runs_get(
    database_url: str, run_id: str, *, as_json: bool, tenant: str | None = None
) -> int:
    """Run ids are only unique within a tenant: ``tenant`` (else the environment's, see
    :func:`natchet.config.resolve_tenant`) says whose run ``run_id`` is."""
    tenant = resolve_tenant(tenant, layered_env())
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        run = await get_run(conn, run_id, tenant=tenant)
    if run is None:
        print(
            f"natchet: no run {run_id} of tenant {tenant} in the projection"
            " (it may not be projected yet)"
        )
        return 1
    if as_json:
        print(_dump(run))
        return 0
    print(f"run {run['id']}  {run['workflow']}  {run['status']}")
    if run.get("error"):
        print(f"  error: {run['error']}")
    for step in run.get("steps", []):
        print(f"  {step['name']:20} {step['status'] or '-':9} attempts={len(step['attempts'])}")
    return 0


async def events_list(database_url: str, *, as_json: bool, tenant: str | None, limit: int) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        events = await list_events(conn, tenant=tenant, limit=limit)
    print(
        _dump(events)
        if as_json
        else "\n".join(
            f"{e['seq']:>8}  {e['key']:30}  {'ok' if e['valid'] else 'NOT JSON'}" for e in events
        )
        or "no events"
    )
    return 0
