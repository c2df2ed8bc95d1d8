"""``natchet workers list``: worker liveness, from the heartbeats workers keep in NATS."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from eventstore import Connection, latest
from natchet.cli.connection import add_nats_flags, open_nats, tenant_of
from natchet.cli.output import dump_json
from natchet.liveness import DEAD_AFTER_S
from natchet.version import natchet_version
from schemas import WorkerHeartbeat, WorkerStatus
from schemas.codec import DecodeError, decode_as
from schemas.protocol import PROTOCOL, accepts, outdated, spoken


def add_parser(sub: Any) -> None:
    workers = sub.add_parser("workers", help="worker liveness, from heartbeats in NATS")
    workers_sub = workers.add_subparsers(dest="workers_command", required=True)
    wl = workers_sub.add_parser("list", help="the tenant's workers, active first")
    wl.add_argument("--json", action="store_true")
    add_nats_flags(wl, role="log")
    wl.set_defaults(handler=workers_list)


def worker_row(
    hb: WorkerHeartbeat, namespace: str, now: dt.datetime, current: str | None = None
) -> dict[str, Any]:
    """One worker as ``workers list`` shows it. ``outdated``: an older protocol or SDK than
    this natchet (``current``); ``refused``: a protocol this engine does not serve."""
    age = (now - dt.datetime.fromisoformat(hb.at)).total_seconds()
    current = natchet_version() if current is None else current
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
        "sdk_version": hb.sdk_version or None,
        "protocol": spoken(hb.protocol),
        "outdated": outdated(hb.protocol, hb.sdk_version, current),
        "refused": not accepts(hb.protocol),
        "labels": dict(hb.labels),
        "directed": hb.directed,
    }


async def worker_rows(nc: Connection, tenant: str) -> list[dict[str, Any]]:
    """Every worker of ``tenant`` with a heartbeat still kept, as ``workers list`` shows
    them (:func:`worker_row`), active first: the CLI's and the dashboard's."""
    records = await latest(nc, tenant, f"{tenant}.*.workers.*")
    now, current = dt.datetime.now(dt.UTC), natchet_version()
    rows = []
    for rec in records:
        try:
            hb = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
        except DecodeError:
            continue
        rows.append(worker_row(hb, rec.subject.split(".")[1], now, current))
    rows.sort(key=lambda r: (r["status"] != "ACTIVE", r["name"]))
    return rows


async def workers_list(args: argparse.Namespace) -> int:
    tenant = tenant_of(args)
    async with open_nats(args, role="log", tenant=tenant) as nc:
        rows = await worker_rows(nc, tenant)
    if args.json:
        dump_json(rows)
    elif not rows:
        print("no workers have sent a heartbeat in the last 5 minutes")
    else:
        print(
            f"{'NAME':20} {'ID':12} {'STATUS':8} {'SLOTS':>9}  {'SDK':10} {'PROTO':>5}  "
            "LAST HEARTBEAT"
        )
        for r in rows:
            slots = f"{r['running']}/{r['slots']}"
            flag = " REFUSED" if r["refused"] else " OUTDATED" if r["outdated"] else ""
            labels = ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()))
            print(
                f"{r['name']:20} {r['id']:12} {r['status']:8} {slots:>9}  "
                f"{r['sdk_version'] or '-':10} {r['protocol']:>5}  "
                f"{r['seconds_since_heartbeat']}s ago{flag}{'  ' + labels if labels else ''}"
            )
        old = sum(r["outdated"] or r["refused"] for r in rows)
        if old:
            print(
                f"{old} worker(s) older than this natchet ({natchet_version()}, wire protocol "
                f"{PROTOCOL}): upgrade their SDK",
                file=sys.stderr,
            )
    return 0
