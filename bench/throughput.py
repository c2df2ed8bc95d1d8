"""End-to-end throughput and latency: diamond runs through the whole engine.

    .venv/bin/python bench/throughput.py [--runs 500] [--workers 4] [--max-runs 8] [--secured]

Starts nats-server and PostgreSQL from their wheels, the engine in-process, and workers
(each with its own NATS connection) in this process; starts --runs runs of a 4-step diamond
whose steps return at once; waits until the projection shows them all SUCCEEDED; prints
runs/s, steps/s, and run latency (created -> finished, from the projection) percentiles.
``--secured`` runs NATS as ``natchet dev`` does (operator mode, an account per tenant): the
workers connect with a token and reach the log through the tenant account's imports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from natchet.config import EngineSettings
from natchet.dev.stack import DevStack
from natchet.engine import Engine
from natchet.tenancy import admin
from worker import ClientSettings, Context, Hatchet


def diamond(hatchet: Hatchet) -> Any:
    @hatchet.workflow(name="Bench")
    class Bench:
        @hatchet.step()
        async def a(self, context: Context) -> int:
            return 1

        @hatchet.step(parents=["a"])
        async def b(self, context: Context) -> int:
            return 2

        @hatchet.step(parents=["a"])
        def c(self, context: Context) -> int:
            return 3

        @hatchet.step(parents=["b", "c"])
        async def d(self, context: Context) -> int:
            return 4

    return Bench()


async def measure(runs: int, workers: int, max_runs: int, secured: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="natchet-bench-") as tmp:
        stack = DevStack(Path(tmp), auth=secured)
        await asyncio.to_thread(stack.start)
        try:
            settings = EngineSettings(
                stack.nats_url,
                stack.database_url,
                ("bench",),
                nats_auth_file=str(stack.auth_file) if stack.auth_file else None,
                discover_tenants=secured,
            )
            async with Engine(settings) as engine, contextlib.AsyncExitStack() as stack_ctx:
                client = ClientSettings(nats_url=stack.nats_url, tenant="bench")
                if secured:
                    assert engine.nc is not None
                    await admin.create_tenant(engine.nc, "bench")
                    issued = await admin.create_token(engine.nc, "bench", stack.nats_url)
                    client = ClientSettings.from_env({"HATCHET_CLIENT_TOKEN": issued.token})
                hatchet = Hatchet(settings=client)
                for i in range(workers):
                    w = hatchet.worker(f"bench-{i}", max_runs=max_runs)
                    w.register_workflow(diamond(hatchet))
                    task = asyncio.create_task(w.async_start())
                    stack_ctx.push_async_callback(lambda t=task: asyncio.wait_for(t, 60))
                    stack_ctx.push_async_callback(w.shutdown)
                    await w.ready.wait()
                start = time.monotonic()
                await asyncio.gather(
                    *(hatchet.admin.aio_run_workflow("Bench", {"i": i}) for i in range(runs))
                )
                submitted = time.monotonic() - start
                async with await psycopg.AsyncConnection.connect(
                    stack.database_url, autocommit=True
                ) as db:
                    while True:
                        cur = await db.execute("SELECT count(*) FROM runs WHERE status='SUCCEEDED'")
                        row = await cur.fetchone()
                        if row and row[0] >= runs:
                            break
                        await asyncio.sleep(0.05)
                    elapsed = time.monotonic() - start
                    cur = await db.execute(
                        "SELECT extract(epoch FROM finished_at - created_at) FROM runs"
                    )
                    latencies = sorted(float(r[0]) for r in await cur.fetchall())
                hatchet.close()
        finally:
            await asyncio.to_thread(stack.stop)
    q = statistics.quantiles(latencies, n=100)
    return {
        "runs": runs,
        "submit_s": submitted,
        "elapsed_s": elapsed,
        "runs_per_s": runs / elapsed,
        "steps_per_s": 4 * runs / elapsed,
        "p50_ms": q[49] * 1000,
        "p95_ms": q[94] * 1000,
        "p99_ms": q[98] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-runs", type=int, default=8)
    parser.add_argument("--secured", action="store_true", help="operator mode, token auth")
    args = parser.parse_args()
    r = asyncio.run(measure(args.runs, args.workers, args.max_runs, args.secured))
    print(
        f"{r['runs']} diamond runs ({4 * r['runs']} steps), {args.workers} workers x "
        f"max_runs={args.max_runs}{', secured' if args.secured else ''}"
    )
    print(
        f"  all SUCCEEDED in the projection after {r['elapsed_s']:.2f}s "
        f"(submitting took {r['submit_s']:.2f}s)"
    )
    print(f"  {r['runs_per_s']:.0f} runs/s, {r['steps_per_s']:.0f} steps/s")
    print(
        f"  run latency (created -> finished): p50 {r['p50_ms']:.0f} ms, "
        f"p95 {r['p95_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
