"""Event -> step start latency at a steady event rate, with and without flow control
(issue 15): the same one-step workflow without flow control (its tasks go straight to the
workers' shared queue) and with each kind of flow control in turn, set so that it never
actually holds a task back (the cost of the gate, not of waiting): ``default_priority``
(every task through the priority window), a run concurrency key, a static rate limit,
a required worker label (every task placed on one worker's directed consumer) and a SOFT
sticky run.

    .venv/bin/python -m bench.flow_latency [--rate 100] [--seconds 20] [--workers 2]

Starts its own NATS and PostgreSQL (``natchet.dev.embedded``), the engine in this process
and SDK workers in this loop, publishes events at ``--rate`` a second with a bare NATS
publish (the body stamped with its time) and has each step record how long after its
event it started. Prints one line per workflow: p50, p90, p99 and max in ms. Not a test:
the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine
from worker import (
    ConcurrencyExpression,
    Context,
    DesiredWorkerLabel,
    Hatchet,
    RateLimit,
    RateLimitDuration,
    StickyStrategy,
)
from worker.settings import ClientSettings

# (workflow name, what the line says, workflow options, task options)
VARIANTS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("Plain", "without flow control", {}, {}),
    ("Prio", "priority (default_priority=2)", {"default_priority": 2}, {}),
    (
        "Keyed",
        "run concurrency key (max_runs=1000)",
        {"concurrency": ConcurrencyExpression("string(input.i % 10)", max_runs=1000)},
        {},
    ),
    (
        "Limited",
        "static rate limit (10^6/min)",
        {},
        {"rate_limits": [RateLimit(static_key="bench", units=1)]},
    ),
    (
        "Labelled",
        "required worker label (placed)",
        {},
        {"desired_worker_labels": {"gpu": DesiredWorkerLabel("a100", required=True)}},
    ),
    ("Sticky", "sticky SOFT (placed)", {"sticky": StickyStrategy.SOFT}, {}),
]


def _workflow(
    hatchet: Hatchet,
    variant: tuple[str, str, dict[str, Any], dict[str, Any]],
    lat: list[float],
    done: asyncio.Event,
    n: int,
) -> Any:
    name, _what, wf_options, task_options = variant
    wf = hatchet.workflow(name=name, on_events=[f"{name.lower()}:go"], **wf_options)

    @wf.task(**task_options)
    async def step(input: Any, ctx: Context) -> None:
        lat.append(time.time() - float(ctx.workflow_input()["t"]))
        if len(lat) >= n:
            done.set()

    return wf


async def _publish(nc: NATS, subject: str, rate: float, seconds: float) -> None:
    total, start = round(rate * seconds), time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            await nc.publish(subject, orjson.dumps({"t": time.time(), "i": sent}))
            sent += 1
        await asyncio.sleep(0.001)
    await nc.flush()


def _line(name: str, lat: list[float]) -> str:
    ms = sorted(x * 1000 for x in lat)
    if not ms:
        return f"{name}: no steps started"
    q = statistics.quantiles(ms, n=100)
    return (
        f"{name}: n={len(ms)} p50={q[49]:.1f}ms p90={q[89]:.1f}ms p99={q[98]:.1f}ms "
        f"max={ms[-1]:.1f}ms"
    )


async def main(rate: float, seconds: float, workers: int) -> None:
    tenant = f"b{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with NatsServer(root / "nats") as server, EmbeddedPostgres(root / "pg") as pg:
            settings = EngineSettings(server.url, pg.url(), (tenant,))
            async with Engine(settings), AsyncExitStack() as stack:
                hatchet = Hatchet(settings=ClientSettings(nats_url=server.url, tenant=tenant))
                await hatchet.rate_limits.aio_put("bench", 1_000_000, RateLimitDuration.MINUTE)
                n = round(rate * seconds)
                lats: list[list[float]] = [[] for _ in VARIANTS]
                dones = [asyncio.Event() for _ in VARIANTS]
                flows = [
                    _workflow(hatchet, v, lat, done, n)
                    for v, lat, done in zip(VARIANTS, lats, dones, strict=True)
                ]
                for i in range(workers):
                    w = hatchet.worker(f"w{i}", slots=8, workflows=flows, labels={"gpu": "a100"})
                    task = asyncio.create_task(w.async_start())
                    stack.push_async_callback(w.shutdown)
                    stack.callback(task.cancel)
                    await w.ready.wait()
                await asyncio.sleep(2)  # the engine hears the workers' heartbeats
                nc = NATS()
                await nc.connect(server.url)
                print(f"{rate:g} events/s for {seconds:g}s, {workers} workers x 8 slots")
                for wf, done, variant, lat in zip(flows, dones, VARIANTS, lats, strict=True):
                    subject = f"{tenant}.default.events.{wf.name.lower()}:go"
                    await _publish(nc, subject, rate, seconds)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 30)
                    print(_line(variant[1], lat), flush=True)
                await nc.close()
                hatchet.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds, args.workers))
