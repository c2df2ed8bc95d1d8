"""natchet's scenarios of the hot-path bench, each on a fresh stack (:mod:`bench.natchet_stack`):

* ``throughput``: N one-step no-op runs (or N 4-step diamonds) triggered by events
  published at once; from the first publish until the last run is SUCCEEDED in Postgres,
  plus the workers' own start rate;
* ``latency``: events at a fixed rate for a while; event -> step start measured in the
  worker, the backlog over time, the projection lag.

Both measure the projection lag of every run they see finish, and the CPU time of each
process (engine, nats-server, PostgreSQL, workers, this harness) per run, and of each
engine process and its projector process alone (``cpu_s_by_process``). A result also
names the engine holding each of the tenant's units (``units``), as there may be several
engines and partitions (``Options.engines``, ``Options.partitions``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from bench.hot_options import Options
from bench.hot_procs import CpuSnapshot, cpu_of, cpu_report
from bench.hot_record import FLUSH_S, StartReader
from bench.hot_stats import drain, latency_result, ms_summary
from bench.hot_worker import DIAMOND_EVENT, NOOP_EVENT
from bench.natchet_load import RunPoller, publish_burst, publish_paced
from bench.natchet_stack import NatchetStack
from natchet.dev.embedded import EmbeddedPostgres

WARMUP = 10
DIAMOND_STEPS = ("da", "db", "dc", "dd")


class NatchetSide:
    name = "natchet"

    def __init__(
        self,
        root: Path,
        pg: EmbeddedPostgres,
        opts: Options,
        on_up: Callable[[NatchetStack], None] | None = None,
    ) -> None:
        """``on_up``: called with each stack once it is up, before it is measured (a
        profiler attaching to an engine)."""
        self.root = root
        self.pg = pg
        self.opts = opts
        self.on_up = on_up
        self._n = 0

    def _run(self, scenario: str, workers: int, measure: Any, workflow: str) -> dict[str, Any]:
        self._n += 1
        opts = self.opts
        stack = NatchetStack(
            self.root / scenario,
            self.pg,
            f"bench_{self._n}",
            engines=opts.engines,
            partitions=opts.partitions,
        )
        began = time.monotonic()
        try:
            stack.start(workers, opts.max_runs, workflow)
            if self.on_up is not None:
                self.on_up(stack)
            up = time.monotonic()
            out: dict[str, Any] = asyncio.run(measure(stack))
            measured = time.monotonic()
        finally:
            stack.stop()
        walls = {"start": up - began, "measure": measured - up, "stop": time.monotonic() - measured}
        head = {"system": self.name, "scenario": scenario, "workers": workers}
        head |= {"engines": opts.engines, "partitions": opts.partitions, "units": stack.units}
        return head | out | {"wall_s": {k: round(v, 1) for k, v in walls.items()}}

    def throughput(self, scenario: str, workers: int, diamond: bool = False) -> dict[str, Any]:
        async def measure(stack: NatchetStack) -> dict[str, Any]:
            return await _throughput(stack, scenario, diamond, self.opts)

        return self._run(scenario, workers, measure, "diamond" if diamond else "noop")

    def latency(self, scenario: str, rate_per_s: float, workers: int) -> dict[str, Any]:
        async def measure(stack: NatchetStack) -> dict[str, Any]:
            return await _latency(stack, scenario, rate_per_s, self.opts)

        return self._run(scenario, workers, measure, "noop") | {"rate_per_s": rate_per_s}


async def _warmup(
    nc: Any, stack: NatchetStack, scenario: str, poller: RunPoller, event: str = NOOP_EVENT
) -> None:
    """A few runs through the whole path (engine, workers, projector) before measuring."""
    subject = f"{stack.subject_prefix}.events.{event}"
    deadline = time.monotonic() + 60
    while True:
        if poller.count("w") == 0:  # (again if none came through: a publish can be lost)
            await publish_burst(nc, subject, WARMUP, scenario, "w")
        if await poller.until("w", WARMUP, min(deadline, time.monotonic() + 5)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{scenario}: warm-up runs not SUCCEEDED within 60 s")


async def _started(reader: StartReader, scenario: str, n: int, wait_s: float) -> None:
    """Wait until the workers have started ``n`` steps of ``scenario``, or ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while reader.count(scenario, "n") < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # the records are files: nothing to wait on but time


def _cpu(stack: NatchetStack, before: CpuSnapshot, after: CpuSnapshot, per: int) -> dict[str, Any]:
    """CPU seconds per process group, and per run (``per``: the runs done or started);
    and of each engine process and each projector process alone."""
    alone = {name: cpu_of(before, after, pid) for name, pid in stack.processes(after).items()}
    return cpu_report(before, after, stack.pids(), per) | {"cpu_s_by_process": alone}


def _lags(poller: RunPoller, kind: str) -> dict[str, Any]:
    runs = poller.runs(kind)
    return {
        "projection_lag": ms_summary([r.lag_s for r in runs]),
        "event_to_succeeded": ms_summary([r.finished_at - r.t_event for r in runs]),
    }


async def _throughput(
    stack: NatchetStack, scenario: str, diamond: bool, opts: Options
) -> dict[str, Any]:
    kind, event = ("d", DIAMOND_EVENT) if diamond else ("n", NOOP_EVENT)
    n = opts.diamond_runs if diamond else opts.runs
    nc = await nats.connect(stack.nats.url, name="bench-publisher")
    reader = StartReader(stack.record_dir)
    try:
        async with RunPoller(stack.database_url, scenario, opts.poll_s) as poller:
            await _warmup(nc, stack, scenario, poller, event)
            before = CpuSnapshot.take()
            published = await publish_burst(
                nc, f"{stack.subject_prefix}.events.{event}", n, scenario, kind
            )
            done = await poller.until(kind, n, time.monotonic() + opts.cap_s)
            after = CpuSnapshot.take()
            await asyncio.sleep(3 * FLUSH_S)
    finally:
        await nc.close()
    t0 = published[0]
    runs = poller.runs(kind)
    last = max((r.seen_at for r in runs), default=t0) if done else t0 + opts.cap_s
    kinds = DIAMOND_STEPS if diamond else ("n",)
    starts = [s.t_start for k in kinds for s in reader.select(scenario, k)]
    out = {
        "kind": "diamond" if diamond else "noop",
        "runs": n,
        "succeeded": len(runs),
        "capped": not done,
        "publish_s": round(published[-1] - t0, 3),
        "elapsed_s": round(last - t0, 3),
        "runs_per_s": round(len(runs) / max(1e-9, last - t0), 1),
        "steps": drain(len(starts), t0, starts),
    }
    return out | _lags(poller, kind) | _cpu(stack, before, after, len(runs))


async def _latency(
    stack: NatchetStack, scenario: str, rate_per_s: float, opts: Options
) -> dict[str, Any]:
    subject = f"{stack.subject_prefix}.events.{NOOP_EVENT}"
    nc = await nats.connect(stack.nats.url, name="bench-publisher")
    reader = StartReader(stack.record_dir)
    try:
        async with RunPoller(stack.database_url, scenario, opts.poll_s) as poller:
            await _warmup(nc, stack, scenario, poller)
            before = CpuSnapshot.take()
            published = await publish_paced(nc, subject, rate_per_s, opts.duration_s, scenario, "n")
            await _started(reader, scenario, len(published), opts.drain_s)
            after = CpuSnapshot.take()
            await asyncio.sleep(3 * FLUSH_S)
            starts = reader.select(scenario, "n")
    finally:
        await nc.close()
    out = latency_result(published, starts, rate_per_s, opts.duration_s)
    return out | _lags(poller, "n") | _cpu(stack, before, after, len(starts))
