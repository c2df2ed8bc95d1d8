"""``natchet runs cancel`` and ``natchet workers list``: operations that go through NATS."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from eventstore import Append, append, connect, latest
from natchet.config import layered_env, resolve_tenant
from natchet.tenancy.cli import engine_options
from schemas import RunCancelRequested, Scope, WorkerHeartbeat, WorkerStatus, encode
from schemas.codec import DecodeError, decode_as

# A worker beats every 2 s; three missed beats and it is presumed dead.
DEAD_AFTER_S = 6.0


def _tenant(args: argparse.Namespace) -> str:
    return resolve_tenant(args.tenant, layered_env())


async def runs_cancel(args: argparse.Namespace) -> int:
    scope = Scope(_tenant(args), args.namespace)
    options, _ = engine_options(args, scope.tenant)
    body = encode(RunCancelRequested(run_id=args.run_id, reason=args.reason))
    nc = await connect(options)
    try:
        subject = scope.run(args.run_id, "cancel_requested")
        await append(nc, Append(subject, body, f"{args.run_id}:cancel_requested"))
    finally:
        await nc.drain()
    print(f"cancel requested for run {args.run_id}; `natchet runs get {args.run_id}` shows it")
    return 0


def worker_row(hb: WorkerHeartbeat, namespace: str, now: dt.datetime) -> dict[str, Any]:
    age = (now - dt.datetime.fromisoformat(hb.at)).total_seconds()
    status = hb.status.value
    if hb.status is not WorkerStatus.STOPPED and age > DEAD_AFTER_S:
        status = "DEAD"
    return {
        "name": hb.name,
        "id": hb.worker_id,
        "namespace": namespace,
        "actions": list(hb.actions),
        "slots": hb.slots,
        "running": hb.running,
        "started_at": hb.started_at,
        "last_heartbeat": hb.at,
        "seconds_since_heartbeat": round(age, 1),
        "status": status,
    }


async def workers_list(args: argparse.Namespace) -> int:
    tenant = _tenant(args)
    options, _ = engine_options(args, tenant)
    nc = await connect(options)
    try:
        records = await latest(nc, tenant, f"{tenant}.*.workers.*")
    finally:
        await nc.drain()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for rec in records:
        try:
            hb = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
        except DecodeError:
            continue
        rows.append(worker_row(hb, rec.subject.split(".")[1], now))
    rows.sort(key=lambda r: (r["status"] != "ACTIVE", r["name"]))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no workers have sent a heartbeat in the last 5 minutes")
    else:
        print(f"{'NAME':20} {'ID':12} {'STATUS':8} {'SLOTS':>9}  LAST HEARTBEAT")
        for r in rows:
            slots = f"{r['running']}/{r['slots']}"
            print(
                f"{r['name']:20} {r['id']:12} {r['status']:8} {slots:>9}  "
                f"{r['seconds_since_heartbeat']}s ago"
            )
    return 0
