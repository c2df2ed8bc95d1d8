"""``natchet cron`` and ``natchet schedule`` as processes, against the real engine: create,
list (cron list shows the next fire times), delete, ``--json``; bad input gets one line on
stderr and exit code 2 (a bad expression says which field, an unknown workflow, a time in
the past)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from projector import get_run
from schemas import Scope
from tests.conftest import eventually
from tests.e2e.test_cli_replay import natchet as replay_natchet
from tests.e2e.test_triggers import register

pytestmark = pytest.mark.timeout(120)


async def natchet(server: NatsServer, tenant: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATCHET_", "HATCHET_"))}
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "natchet.cli", *args],
        *["--nats-url", server.url, "--tenant", tenant],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=clean,
    )
    out, err = await proc.communicate()
    assert b"Traceback" not in err, err
    return proc.returncode or 0, out.decode(), err.decode()


async def fails(server: NatsServer, tenant: str, cwd: Path, *args: str) -> str:
    code, _out, err = await natchet(server, tenant, cwd, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("natchet: "), (code, err)
    return lines[0]


async def ok_json(server: NatsServer, tenant: str, cwd: Path, *args: str) -> Any:
    code, out, err = await natchet(server, tenant, cwd, *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_cron_and_schedule_commands(
    engine: Engine,
    nats_server: NatsServer,
    nc: NATS,
    tenant_name: str,
    tmp_path: Path,
    db: Any,
    dsn: str,
) -> None:
    s, t, d = nats_server, tenant_name, tmp_path
    await register(nc, Scope(t))
    said = await fails(s, t, d, "cron", "create", "Tick", "bad", "0 25 * * *")
    assert "field 2 (hour) is invalid" in said
    said = await fails(s, t, d, "cron", "create", "Nope", "n", "0 1 * * *")
    assert "unknown workflow 'Nope'" in said
    said = await fails(s, t, d, "cron", "create", "Tick", "n", "* * * * *", "--timezone", "X/Y")
    assert "unknown timezone 'X/Y'" in said
    said = await fails(s, t, d, "schedule", "create", "Tick", "--at", "2001-01-01T00:00:00Z")
    assert "in the past" in said
    said = await fails(s, t, d, "cron", "delete", "nothing")
    assert "no cron named 'nothing'" in said

    made = await ok_json(s, t, d, "cron", "create", "Tick", "n", "*/5 * * * *", "--input", "{}")
    assert made["name"] == "n" and made["expression"] == "*/5 * * * *"

    async def armed() -> Any:
        (cron,) = await ok_json(s, t, d, "cron", "list")
        return cron if cron["next_fire"] else None

    cron = await eventually(armed, timeout_s=30)
    assert len(cron["upcoming"]) == 3 and cron["upcoming"][0] == cron["next_fire"]
    code, out, _ = await natchet(s, t, d, "cron", "list")
    assert code == 0 and "*/5 * * * *" in out and cron["next_fire"] in out
    assert (await ok_json(s, t, d, "cron", "delete", "n")) == {"deleted": "n"}
    assert await ok_json(s, t, d, "cron", "list") == []

    made = await ok_json(s, t, d, "schedule", "create", "Tick", "--in", "3600")
    (listed,) = await ok_json(s, t, d, "schedule", "list")
    assert listed["id"] == made["id"] and listed["status"] == "PENDING"
    await ok_json(s, t, d, "schedule", "delete", made["id"])
    (listed,) = await ok_json(s, t, d, "schedule", "list")
    assert listed["status"] == "DELETED"
    said = await fails(s, t, d, "schedule", "delete", made["id"])
    assert "is DELETED" in said

    # The read model: crons, schedules, and the runs a tick started, which a rebuild from
    # the log reproduces exactly.
    await ok_json(s, t, d, "cron", "create", "Tick", "fast", "* * * * * *")

    async def fired_runs() -> list[Any]:
        cur = await db.execute(
            "SELECT triggered_by_cron, trigger_fire_at FROM runs"
            " WHERE tenant = %s AND triggered_by_cron IS NOT NULL",
            (t,),
        )
        rows = await cur.fetchall()
        return rows if len(rows) >= 2 else []

    rows = await eventually(fired_runs, timeout_s=30)
    assert {r[0] for r in rows} == {"fast"} and len({r[1] for r in rows}) == len(rows)
    cur = await db.execute(
        "SELECT id FROM runs WHERE tenant = %s AND triggered_by_cron = 'fast' LIMIT 1", (t,)
    )
    (run_id,) = await cur.fetchone()
    run = await get_run(db, run_id, tenant=t)
    assert run is not None and run["fired_by"]["cron"] == "fast" and run["triggered_by"] is None
    await ok_json(s, t, d, "cron", "delete", "fast")

    async def projected() -> Any:
        cur = await db.execute(
            "SELECT name, status, last_fire_at IS NOT NULL FROM crons WHERE tenant = %s"
            " ORDER BY name",
            (t,),
        )
        crons = await cur.fetchall()
        cur = await db.execute("SELECT status FROM schedules WHERE tenant = %s", (t,))
        schedules = await cur.fetchall()
        want = [("fast", "DELETED", True), ("n", "DELETED", False)]
        return crons == want and schedules == [("DELETED",)]

    await eventually(projected, timeout_s=30)
    code, out, err = await replay_natchet(d, s, dsn, "replay", "--verify", "--tenant", t, "--json")
    assert code == 0, (out, err)
