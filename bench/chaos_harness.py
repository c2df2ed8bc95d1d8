"""One chaos scenario, end to end: a fresh stack, a steady load, a fault, and the checks.

Shared by ``bench/chaos.py`` (the table in docs/reliability.md) and ``tests/fault``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import psycopg

import eventstore
from bench import chaos_check as check
from bench import chaos_cluster as cluster
from bench.chaos_load import Tracker, submit
from bench.chaos_stack import Stack
from bench.chaos_worker import STEPS
from schemas import stream_name
from schemas.subjects import Scope, tasks_stream_name
from worker import ClientSettings, Hatchet

log = logging.getLogger(__name__)

SCENARIOS = (
    "worker_kill_9",
    "nats_restart",
    "postgres_restart",
    "engine_kill_9",
    "sigterm_worker",
    "nats_node_kill_9",
    "nats_follower_kill_9",
)
# Run on a NATS cluster of 3 nodes, every stream with 3 replicas (docs/scaling.md).
CLUSTER_SCENARIOS = ("nats_node_kill_9", "nats_follower_kill_9")
CLUSTER_NODES = 3


@attrs.frozen
class Config:
    runs: int = 300
    rate_per_s: float = 25.0
    workers: int = 3
    strikes: int = 3  # workers killed / SIGTERMed per worker scenario
    outage_s: float = 2.0  # how long NATS / Postgres / the engine stay down
    sigterm_grace_s: float = 0.02  # short, so SIGTERM catches steps that must be handed back
    deadline_s: float = 180.0  # for every run to be terminal after the load


@attrs.define
class Report:
    scenario: str
    submitted: int = 0
    completed: int = 0  # terminal in Postgres
    lost: int = 0
    duplicated: int = 0  # duplicated transitions in the log
    redelivery_delays: list[float] = attrs.Factory(list)
    attempts: int = 0  # deliveries taken (assigned, or reported alone), all runs
    handed_back: int = 0  # deliveries a worker gave back on SIGTERM
    double_executions: int = 0  # steps that succeeded on two deliveries (at-least-once)
    faults: list[str] = attrs.Factory(list)
    exit_codes: dict[str, int | None] = attrs.Factory(dict)
    violations: list[str] = attrs.Factory(list)
    duration_s: float = 0.0
    # Cluster scenarios: the node killed and when, how long until runs started at the
    # load's rate again, the longest pause between run starts, and the restarted node's
    # catch-up (until it held a current copy of every stream of the tenant).
    node_killed: str | None = None
    killed_at: dt.datetime | None = None
    recovered_s: float | None = None
    max_start_gap_s: float | None = None
    catch_up_s: float | None = None
    replicas: dict[str, int] = attrs.Factory(dict)  # stream -> num_replicas as stored

    @property
    def max_redelivery_s(self) -> float | None:
        return max(self.redelivery_delays) if self.redelivery_delays else None

    @property
    def ok(self) -> bool:
        return not self.violations


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.define
class Scenario:
    """What a fault function gets: the stack, the tracker, the config, and the record."""

    stack: Stack
    tracker: Tracker
    config: Config
    report: Report
    stops: list[check.Stop] = attrs.Factory(list)

    @property
    def total_steps(self) -> int:
        return self.config.runs * len(STEPS)

    def note(self, what: str) -> None:
        log.info("fault: %s", what)
        self.report.faults.append(what)

    async def strike_workers(self, sig: signal.Signals, grace_s: float) -> None:
        """Stop a worker that is mid-step, ``strikes`` times over the load; replace it."""
        n = self.config.strikes
        for i in range(n):
            await self.tracker.taken_at_least(self.total_steps * (i + 1) // (n + 2))
            name = await self.tracker.busy_worker(lambda: list(self.stack.workers), min_held=3)
            held = len(self.tracker.in_flight[name])
            at = utcnow()
            self.stack.retire(name, sig)
            self.stops.append(check.Stop(name, at, sig.name))
            self.note(f"{sig.name} {name} holding {held} steps")
            await asyncio.to_thread(self.stack.start_worker, grace_s)

    async def outage(self, what: str, restart: Callable[[float], None]) -> None:
        await self.tracker.taken_at_least(self.total_steps * 3 // 10)
        self.note(f"{what} down {self.config.outage_s:g}s")
        await asyncio.to_thread(restart, self.config.outage_s)


async def worker_kill_9(s: Scenario) -> None:
    await s.strike_workers(signal.SIGKILL, 30.0)


async def nats_restart(s: Scenario) -> None:
    await s.outage("nats-server", s.stack.restart_nats)


async def postgres_restart(s: Scenario) -> None:
    await s.outage("postgres", s.stack.restart_postgres)


async def engine_kill_9(s: Scenario) -> None:
    await s.outage("engine (kill -9)", s.stack.restart_engine)


async def sigterm_worker(s: Scenario) -> None:
    await s.strike_workers(signal.SIGTERM, s.config.sigterm_grace_s)


async def nats_node_kill_9(s: Scenario) -> None:
    """``kill -9`` the node leading the tenant's log (the hard case), leave it down for
    ``outage_s``, start it again (same ports, same store) and wait until it holds current
    copies again."""
    await _kill_node(s, leader=True)


async def nats_follower_kill_9(s: Scenario) -> None:
    """The same with a node that leads neither the log nor the task queues (if any)."""
    await _kill_node(s, leader=False)


async def _kill_node(s: Scenario, *, leader: bool) -> None:
    nodes = s.stack.cluster
    assert nodes is not None, "this scenario runs on a cluster stack"
    nc, tenant = s.tracker.nc, s.stack.tenant
    await s.tracker.taken_at_least(s.total_steps * 3 // 10)
    log_leader = await cluster.stream_leader(nc, stream_name(tenant))
    if leader:
        node, what = log_leader, "the log's leader"
    else:
        busy = {log_leader, await cluster.stream_leader(nc, tasks_stream_name(tenant))}
        spare = [n for n in nodes.server_names if n not in busy]
        node = spare[0] if spare else next(n for n in nodes.server_names if n != log_leader)
        what = "a follower of the log" + ("" if spare else " (leads the task queues)")
    index = nodes.index_of(node)
    s.report.killed_at, s.report.node_killed = utcnow(), node
    await asyncio.to_thread(nodes.kill, index)
    s.note(f"kill -9 nats node {node} ({what}), down {s.config.outage_s:g}s")
    await asyncio.sleep(s.config.outage_s)  # outage length: shapes the fault, syncs nothing
    await asyncio.to_thread(nodes.start_node, index)
    streams = cluster.tenant_streams(tenant)
    s.report.catch_up_s = await cluster.caught_up(nc, streams, node, timeout_s=60.0)


FAULTS: dict[str, Callable[[Scenario], Awaitable[None]]] = {
    "worker_kill_9": worker_kill_9,
    "nats_restart": nats_restart,
    "postgres_restart": postgres_restart,
    "engine_kill_9": engine_kill_9,
    "sigterm_worker": sigterm_worker,
    "nats_node_kill_9": nats_node_kill_9,
    "nats_follower_kill_9": nats_follower_kill_9,
}


async def query(dsn: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
    """Rows, or None while Postgres is unreachable (it may be restarting)."""
    with contextlib.suppress(psycopg.OperationalError):
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=2) as conn:
            cur = await conn.execute(sql, params)  # type: ignore[arg-type]
            return list(await cur.fetchall())
    return None


async def wait_terminal(dsn: str, runs: set[str], deadline_s: float) -> int:
    """How many of ``runs`` are terminal in Postgres: all, or as many as by the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    done = 0
    while True:
        rows = await query(
            dsn,
            "SELECT count(*) FROM runs WHERE id = ANY(%s) AND status = ANY(%s)",
            (list(runs), list(check.TERMINAL)),
        )
        done = rows[0][0] if rows else done
        if done >= len(runs) or loop.time() > end:
            return int(done)
        await asyncio.sleep(0.25)


async def wait_projected(nc: Any, dsn: str, tenant: str, timeout_s: float = 60.0) -> None:
    """Until the projector's checkpoint reaches the stream's last sequence as of now."""
    last = await eventstore.last_seq(nc, tenant)
    end = time.monotonic() + timeout_s
    sql = "SELECT last_seq FROM projector_checkpoints WHERE stream = %s"
    while time.monotonic() < end:
        rows = await query(dsn, sql, (stream_name(tenant),))
        if rows and rows[0][0] >= last:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"projector did not reach seq {last} within {timeout_s:g}s")


async def verify(s: Scenario, nc: Any, runs: set[str]) -> None:
    stack, report = s.stack, s.report
    view = await check.read_log(nc, stack.tenant)
    dups = view.duplicated_transitions()
    report.duplicated = len(dups)
    report.attempts = len(view.attempts())
    report.double_executions = view.double_executions()
    report.handed_back = view.handed_back()
    report.violations += [f"duplicated transition: {d}" for d in dups]
    report.violations += check.check_log(view, runs, STEPS)
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        report.violations += await check.check_postgres(conn, stack.tenant, runs, STEPS)
        report.violations += await check.check_attempts(conn, stack.tenant, view)
    report.redelivery_delays, bad = check.redelivery_delays(view, s.stops)
    report.violations += bad
    report.violations += [
        f"dedup id stored twice: {d}" for d in await cluster.duplicate_msg_ids(nc, stack.tenant)
    ]
    if report.killed_at is not None:
        await measure_recovery(s, nc, runs)


async def measure_recovery(s: Scenario, nc: Any, runs: set[str]) -> None:
    """How the run rate came back after the node was killed, and what the server stored."""
    report = s.report
    assert report.killed_at is not None
    rows = await query(
        s.stack.database_url,
        "SELECT started_at FROM runs WHERE id = ANY(%s) AND started_at IS NOT NULL",
        (list(runs),),
    )
    recovery = cluster.rate_recovery(
        [r[0] for r in rows or []], report.killed_at, s.config.rate_per_s
    )
    report.recovered_s, report.max_start_gap_s = recovery.recovered_s, recovery.max_gap_s
    for stream in cluster.tenant_streams(s.stack.tenant):
        report.replicas[stream] = (await cluster.replicas(nc, stream)).num_replicas


async def run_scenario(name: str, config: Config, root: Path | None = None) -> Report:
    """Run scenario ``name`` on a fresh stack under ``root`` (a temp dir if None)."""
    with contextlib.ExitStack() as cleanup:
        if root is None:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        nodes = CLUSTER_NODES if name in CLUSTER_SCENARIOS else 1
        stack = Stack(root / name, nats_nodes=nodes)
        cleanup.callback(stack.close)
        return await _run(name, config, stack)
    raise AssertionError("unreachable")


async def _run(name: str, config: Config, stack: Stack) -> Report:
    report = Report(name)
    began = time.monotonic()
    await asyncio.to_thread(stack.start)
    grace = config.sigterm_grace_s if name == "sigterm_worker" else 30.0
    for _ in range(config.workers):
        await asyncio.to_thread(stack.start_worker, grace)
    scope = Scope(stack.tenant, "default")
    nc = await eventstore.connect(eventstore.NatsOptions(stack.nats_url, name="chaos-harness"))
    hatchet = Hatchet(settings=ClientSettings(nats_url=stack.nats_url, tenant=stack.tenant))
    try:
        tracker = Tracker(nc, scope)
        await tracker.start()
        scenario = Scenario(stack, tracker, config, report)
        runs: set[str] = set()
        load = asyncio.create_task(submit(nc, hatchet, scope, config.runs, config.rate_per_s, runs))
        await asyncio.gather(FAULTS[name](scenario), load)
        report.submitted = len(runs)
        report.completed = await wait_terminal(stack.database_url, runs, config.deadline_s)
        report.lost = report.submitted - report.completed
        codes = await asyncio.to_thread(stack.stop_workers)
        await wait_projected(nc, stack.database_url, stack.tenant)
        await verify(scenario, nc, runs)
        codes |= await asyncio.to_thread(stack.stop_engine)
        report.exit_codes = codes
        report.violations += [
            f"{p.name} exited {p.popen.returncode} after SIGTERM (expected 0)"
            for p in [*stack.retired, *stack.engines]
            if p.signalled == "SIGTERM" and p.popen.returncode != 0
        ]
    finally:
        await asyncio.to_thread(hatchet.close)
        await nc.close()
    report.duration_s = time.monotonic() - began
    return report
