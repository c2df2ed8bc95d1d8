"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from natchet.dev.embedded import NatsServer
from projector import get_run
from tests.conftest import eventually
from worker import ClientSettings, Hatchet


def hatchet_for(server: NatsServer, tenant: str, namespace: str = "default") -> Hatchet:
    return Hatchet(settings=ClientSettings(nats_url=server.url, tenant=tenant, namespace=namespace))


def worker_env(server: NatsServer, tenant: str, namespace: str = "default") -> dict[str, str]:
    return {
        "HATCHET_CLIENT_HOST_PORT": f"127.0.0.1:{server.port}",
        "HATCHET_CLIENT_TENANT_ID": tenant,
        "HATCHET_CLIENT_NAMESPACE": namespace,
    }


async def run_ends(
    db: psycopg.AsyncConnection[Any],
    run_id: str,
    *,
    tenant: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """The run as projected, once it reached a terminal status (``tenant``: the only tenant
    with that run id, when not given)."""

    async def terminal() -> dict[str, Any] | None:
        owner = tenant
        if owner is None:
            cur = await db.execute("SELECT tenant FROM runs WHERE id = %s", (run_id,))
            rows = await cur.fetchall()
            assert len(rows) <= 1, f"run id {run_id} in several tenants: pass tenant="
            if not rows:
                return None
            owner = rows[0][0]
        run = await get_run(db, run_id, tenant=owner)
        if run and run["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return run
        return None

    return await eventually(terminal, timeout_s=timeout_s)


async def runs_of(db: psycopg.AsyncConnection[Any], tenant: str) -> list[dict[str, Any]]:
    cur = await db.execute("SELECT id FROM runs WHERE tenant = %s ORDER BY created_at", (tenant,))
    return [
        r
        for (rid,) in await cur.fetchall()
        if (r := await get_run(db, rid, tenant=tenant)) is not None
    ]


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited but not yet reaped, has stopped: it holds no port and
    no file)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
