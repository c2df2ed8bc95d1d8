"""``natchet replay [--verify] [--swap] [--tenant T] [--json]``: rebuild the read model from the
log into a fresh Postgres schema (``projector.replay``) and, with ``--verify``, compare it
with the live one, row by row, printing every difference and exiting 1 if there is any;
``--swap`` then makes the rebuild the live read model (``projector.replay.swap``). With
``--json``, stdout is one JSON object at the end (progress stays on stderr)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from typing import Any

import psycopg
import tqdm

from eventstore import Connection
from natchet.cli.connection import (
    add_database_flag,
    add_nats_flags,
    database_url,
    open_database,
    open_nats,
)
from natchet.cli.output import note
from projector.migrations import DEFAULT_SCHEMA
from projector.replay import (
    Difference,
    ReplayError,
    Report,
    drop_schema,
    live_checkpoints,
    replay,
    schema_exists,
    swap,
)
from projector.shares import MAX_AUTO, MAX_SHARES, SHARED_FROM
from schemas.subjects import check_tenant

PLAIN_EVERY_S = 2.0


def add_parser(sub: Any) -> None:
    rp = sub.add_parser(
        "replay",
        help="rebuild the read model from the log into a fresh schema; --verify compares it",
        description="Rebuild the Postgres read model from the start of each tenant's log into "
        "a fresh schema, up to where the live projection is (its checkpoint), with the "
        "projector's own code. --verify compares it with the live schema row by row, prints "
        "every difference (table, key, column, live and rebuilt values) and exits 1 if any.",
    )
    rp.add_argument(
        "--verify",
        action="store_true",
        help="compare with the live schema; exit 1 on any difference",
    )
    rp.add_argument(
        "--tenant", help="replay (and compare) this tenant only (default: every projected one)"
    )
    rp.add_argument(
        "--schema", help="the schema to rebuild into (default natchet_replay_<UTC time>)"
    )
    rp.add_argument(
        "--swap",
        action="store_true",
        help="after a verify that finds no difference, make the rebuild the live read model"
        " (atomically; the old tables are kept in a schema it names)",
    )
    rp.add_argument(
        "--keep", action="store_true", help="with --verify: keep the rebuilt schema afterwards"
    )
    rp.add_argument(
        "--json",
        action="store_true",
        help='one object on stdout at the end: {"messages": N, "seconds": S, "rate": R,'
        ' "tenants": [...], "verified": B, "differences": [...], "swapped": B, ...}'
        " (progress stays on stderr; same exit codes)",
    )
    rp.add_argument(
        "--shares",
        type=_shares,
        metavar="N",
        help="rebuild in N processes, each the rows of its share of the runs (default: one a"
        f" core, up to {MAX_AUTO}, for a log of {SHARED_FROM:,} messages or more; else 1)",
    )
    add_nats_flags(rp, role="engine")
    add_database_flag(rp)
    rp.set_defaults(handler=replay_command)


def _shares(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SHARES:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of processes from 1 to {MAX_SHARES}")
    return n


class _Meter:
    """Progress on stderr: a bar on a terminal, else a plain line every ~2 s."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: tqdm.tqdm[Any] | None = None
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.total = 0
        self.called = False

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total, self.called = done, total, True
        if self.tty:
            if self.bar is None:
                self.bar = tqdm.tqdm(total=total, unit="msg", desc="replay", file=sys.stderr)
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            note(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"replayed {self.done:,}/{self.total:,} messages, {rate:,.0f}/s, ETA {left:,.0f} s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.called and not self.tty:
            note(self.line(time.monotonic()))


def default_schema() -> str:
    return "natchet_replay_" + dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")


async def replay_command(args: argparse.Namespace) -> int:
    url = database_url(args)
    schema = args.schema or default_schema()
    if schema == DEFAULT_SCHEMA:
        raise ReplayError(f"cannot rebuild into the live schema {DEFAULT_SCHEMA!r}")
    verify = args.verify or args.swap
    async with open_database(url) as live, open_database(url) as work:
        await live.set_autocommit(True)
        await work.set_autocommit(True)
        projected = await live_checkpoints(live)
        if args.tenant:
            tenants = [check_tenant(args.tenant)]
        elif projected:
            tenants = sorted(projected)
        else:
            raise ReplayError("the live projection holds no tenant yet: nothing to replay")
        others = sorted(set(projected) - set(tenants))
        if args.swap and others:
            raise ReplayError(
                f"--swap replaces the whole read model, which also holds {', '.join(others)}:"
                " replay every tenant (no --tenant) to swap"
            )
        if await schema_exists(work, schema):
            raise ReplayError(f"schema {schema!r} already exists: replay into a fresh one")
        async with contextlib.AsyncExitStack() as stack:
            logs: dict[str, Connection] = {}
            for tenant in tenants:
                logs[tenant] = await stack.enter_async_context(
                    open_nats(args, role="log", tenant=tenant)
                )
            try:
                return await _replay(args, live, work, logs, schema, verify)
            except BaseException as exc:
                await _drop_unless_kept(args, work, schema)
                if isinstance(exc, psycopg.Error) and not isinstance(exc, psycopg.OperationalError):
                    # Refused by Postgres (a privilege to move tables, ...): one line.
                    text = str(exc).strip().splitlines()
                    first = text[0] if text else type(exc).__name__
                    raise ReplayError(f"PostgreSQL: {first}") from exc
                raise


async def _drop_unless_kept(
    args: argparse.Namespace, work: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """A rebuild that did not finish is of no use: leave nothing behind (unless --keep)."""
    if not args.keep and not work.closed:
        with contextlib.suppress(psycopg.Error):
            if await schema_exists(work, schema):
                await drop_schema(work, schema)


async def _replay(
    args: argparse.Namespace,
    live: psycopg.AsyncConnection[Any],
    work: psycopg.AsyncConnection[Any],
    logs: dict[str, Connection],
    schema: str,
    verify: bool,
) -> int:
    meter = _Meter()
    started = time.monotonic()
    try:
        report = await replay(
            live, work, logs, schema, progress=meter, compare=verify, shares=args.shares
        )
    finally:
        meter.close()
    seconds = time.monotonic() - started
    said: list[str] = []  # what a person reads on stdout (not with --json)
    result: dict[str, Any] = {
        "messages": meter.done,
        "seconds": round(seconds, 3),
        "rate": round(meter.done / seconds, 1) if seconds > 0 else None,
        "tenants": sorted(logs),
        "covered": report.covered,
        "schema": schema,
        "verified": verify,
        "rows_compared": report.rows if verify else None,
        "caught_up": report.caught_up,
        "differences": [difference_json(d) for d in report.differences],
        "swapped": False,
        "old_schema": None,
        "kept": True,
    }
    for tenant, seq in report.covered.items():
        said.append(
            f"replayed {tenant}: log sequences 1..{seq} (where the live projection is)"
            f" into schema {schema}"
        )
    code = await _verify_and_swap(args, work, logs, schema, verify, report, result, said)
    if args.json:
        print(json.dumps(result, indent=2, default=jsonable))
    else:
        for line in said:
            print(line)
    return code


async def _verify_and_swap(
    args: argparse.Namespace,
    work: psycopg.AsyncConnection[Any],
    logs: dict[str, Connection],
    schema: str,
    verify: bool,
    report: Report,
    result: dict[str, Any],
    said: list[str],
) -> int:
    """What the verify found, and the swap or the drop it leads to: told in ``said`` (and
    ``result``); the exit code."""
    if not verify:
        said.append(
            f"the rebuilt read model is in schema {schema}"
            f" (DROP SCHEMA {schema} CASCADE removes it)"
        )
        return 0
    if report.caught_up:
        said.append(
            f"the live projector applied {report.caught_up:,} more messages meanwhile:"
            " replayed too, before comparing"
        )
    said.extend(diff.describe() for diff in report.differences)
    n = len(report.differences)
    said.append(
        f"compared {report.rows:,} live rows of {len(logs)} tenant(s) with the rebuild:"
        f" {n} difference{'' if n == 1 else 's'}"
    )
    if n and args.swap:
        said.append("not swapped: the rebuild differs from the live projection")
    elif args.swap:
        old = "natchet_old_" + dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S_%f")
        held = await swap(work, logs, schema, report.covered, old)
        upto = ", ".join(f"{t} through {seq}" for t, seq in held.items())
        said.append(
            f"swapped: the rebuilt read model ({upto}) is now live in schema {DEFAULT_SCHEMA};"
            f" the old tables are in schema {old} (DROP SCHEMA {old} CASCADE removes them)"
        )
        result.update(swapped=True, old_schema=old, covered=held, kept=False)
        return 0
    if args.keep:
        said.append(f"kept the rebuilt schema {schema}")
    else:
        await drop_schema(work, schema)
        result["kept"] = False
    return 1 if n else 0


def difference_json(diff: Difference) -> dict[str, Any]:
    """A difference as ``--json`` gives it (``column`` null: a row only one side has, the
    other side null)."""
    return {
        "table": diff.table,
        "key": diff.key,
        "column": diff.column,
        "live": diff.live,
        "rebuilt": diff.rebuilt,
    }


def jsonable(value: Any) -> Any:
    """A column value JSON cannot hold as is: times in ISO 8601, anything else as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)
