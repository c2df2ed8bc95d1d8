"""Event -> step start latency at a steady event rate, with and without flow control
(issue 15): a workflow without priority (its tasks go straight to the workers) and the
same workflow with ``default_priority`` set (every task through the priority window).

    .venv/bin/python -m bench.priority_latency [--rate 100] [--seconds 20] [--workers 2]

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
from worker import Context, Hatchet
from worker.settings import ClientSettings


def _workflow(
    hatchet: Hatchet, name: str, priority: int | None, lat: list[float], done: asyncio.Event, n: int
) -> Any:
    wf = hatchet.workflow(name=name, on_events=[f"{name.lower()}:go"], default_priority=priority)

    @wf.task()
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
                plain: list[float] = []
                prio: list[float] = []
                n = round(rate * seconds)
                dones = (asyncio.Event(), asyncio.Event())
                flows = [
                    _workflow(hatchet, "Plain", None, plain, dones[0], n),
                    _workflow(hatchet, "Prio", 2, prio, dones[1], n),
                ]
                for i in range(workers):
                    w = hatchet.worker(f"w{i}", slots=8, workflows=flows)
                    task = asyncio.create_task(w.async_start())
                    stack.push_async_callback(w.shutdown)
                    stack.callback(task.cancel)
                    await w.ready.wait()
                await asyncio.sleep(2)  # the engine hears the workers' heartbeats
                nc = NATS()
                await nc.connect(server.url)
                for wf, done in zip(flows, dones, strict=True):
                    subject = f"{tenant}.default.events.{wf.name.lower()}:go"
                    await _publish(nc, subject, rate, seconds)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), 30)
                await nc.close()
                print(f"{rate:g} events/s for {seconds:g}s, {workers} workers x 8 slots")
                print(_line("without flow control", plain))
                print(_line("with priority (default_priority=2)", prio))
                hatchet.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds, args.workers))
