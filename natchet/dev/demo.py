"""``natchet demo``: the whole path on an embedded stack, start to finish.

Starts nats-server and PostgreSQL from their wheels, the engine, and an example worker;
publishes events over a bare NATS socket (no SDK, no headers); shows the runs finish in
Postgres; stops everything. Exits 0 when every run succeeded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from natchet.dev.serve import dev_engine, in_thread_to_the_end
from projector import get_run, list_runs
from schemas.errors import NatchetError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TENANT = "dev"


def raw_publish(
    host: str, port: int, subject: str, payloads: list[bytes], token: str | None = None
) -> None:
    """Publish with the NATS text protocol: what `nats pub` does, without any library."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        connect: dict[str, Any] = {"verbose": False, "pedantic": False, "name": "natchet-demo"}
        if token:
            connect["auth_token"] = token  # the tenant's token is the NATS credential
        out = b"CONNECT " + orjson.dumps(connect) + b"\r\n"
        for body in payloads:
            out += b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(body), body)
        sock.sendall(out + b"PING\r\n")
        buf = b""
        while b"PONG" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise NatchetError("NATS closed the connection before PONG")
            if b"-ERR" in chunk:
                raise NatchetError(f"NATS refused the publish: {chunk!r}")
            buf += chunk


async def _wait_registered(db: str, workflow: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        while time.monotonic() < end:
            cur = await conn.execute("SELECT 1 FROM workflows WHERE name = %s", (workflow,))
            if await cur.fetchone():
                return
            await asyncio.sleep(0.2)
    raise NatchetError(f"the example worker did not register {workflow} within {deadline_s}s")


async def _watch(db: str, expected: int, deadline_s: float) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline_s
    last = ""
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        while True:
            runs = await list_runs(conn, tenant=TENANT, limit=expected * 2)
            counts: dict[str, int] = {}
            for run in runs:
                counts[run["status"]] = counts.get(run["status"], 0) + 1
            line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if line != last:
                print(f"  runs: {line or 'none yet'}", flush=True)
                last = line
            done = [r for r in runs if r["status"] in ("SUCCEEDED", "FAILED", "CANCELLED")]
            if len(done) >= expected:
                return runs
            if time.monotonic() > end:
                raise NatchetError(f"only {len(done)} of {expected} runs finished in {deadline_s}s")
            await asyncio.sleep(0.3)


async def run_demo(events: int = 10) -> int:
    with tempfile.TemporaryDirectory(prefix="natchet-demo-") as tmp:
        print("starting nats-server and PostgreSQL from their wheels ...", flush=True)
        worker: subprocess.Popen[bytes] | None = None
        async with dev_engine(
            Path(tmp), nats_url=None, database_url=None, tenant=TENANT, env_file=None
        ) as dev:
            nats_url, database_url = dev.settings.nats_url, dev.settings.database_url
            print(f"engine up: NATS {nats_url}, Postgres {database_url}")
            token = dev.env["HATCHET_CLIENT_TOKEN"]
            print(f"tenant {TENANT}: token issued; workers and publishers present it")
            try:
                worker = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                    [sys.executable, str(EXAMPLES / "demo_worker.py")],
                    env={**os.environ, **dev.env},
                )
                await _wait_registered(database_url, "UserSignup", 30)
                subject = f"{TENANT}.default.events.user:create"
                print(f"publishing {events} events on {subject} over a bare NATS socket")
                bodies = [
                    b'{"id": %d, "email": "user%d@example.com"}' % (i, i) for i in range(events)
                ]
                port = int(nats_url.rsplit(":", 1)[1])
                await asyncio.to_thread(raw_publish, "127.0.0.1", port, subject, bodies, token)
                runs = await _watch(database_url, events, 60)
                async with await psycopg.AsyncConnection.connect(database_url) as conn:
                    detail = await get_run(conn, runs[0]["id"], tenant=TENANT)
                _print_summary(runs, detail)
                ok = all(r["status"] == "SUCCEEDED" for r in runs)
            finally:
                if worker is not None:
                    worker.terminate()
                    await in_thread_to_the_end(lambda: worker.wait(30) if worker else None)
    print("demo finished: all runs SUCCEEDED" if ok else "demo finished: some runs FAILED")
    return 0 if ok else 1


def _print_summary(runs: list[dict[str, Any]], detail: dict[str, Any] | None) -> None:
    print(f"\n{'RUN':36}  {'WORKFLOW':12}  {'STATUS':9}  TRIGGERED BY")
    for run in runs:
        trig = run.get("triggered_by") or {}
        print(
            f"{run['id']:36}  {run['workflow']:12}  {run['status']:9}  "
            f"{trig.get('event_key', '-')} #{trig.get('event_id', '-')}"
        )
    if detail:
        print(f"\nrun {detail['id']}:")
        for step in detail["steps"]:
            worker = step["attempts"][-1]["worker_name"] if step["attempts"] else "-"
            print(f"  {step['name']:10} {step['status']:9} on {worker:10} -> {step['output']}")
