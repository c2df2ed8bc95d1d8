"""What a re-run costs: N one-step runs, then each replayed (``hatchet.admin.replay``),
timed until the projection shows them SUCCEEDED, both ways, in the same stack.

    .venv/bin/python -m bench.replays [--runs 500] [--workers 2] [--max-runs 8]

A replay costs the dispatcher one read of the replayed run's history (batched direct
gets of ``runs.<id>.>``) in its decision loop, besides what any run costs: the
ratio of the two rates is that read's price.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from natchet.config import EngineSettings
from natchet.dev.stack import DevStack
from natchet.engine import Engine
from worker import ClientSettings, Context, Hatchet, WorkflowRunRef


def one_step(hatchet: Hatchet) -> Any:
    @hatchet.workflow()
    class Once:
        @hatchet.step()
        def only(self, context: Context) -> dict[str, Any]:
            return {"i": context.workflow_input()["i"]}

    return Once()


async def succeeded(db: psycopg.AsyncConnection[Any], count: int) -> None:
    while True:
        cur = await db.execute("SELECT count(*) FROM runs WHERE status = 'SUCCEEDED'")
        row = await cur.fetchone()
        if row and row[0] >= count:
            return
        await asyncio.sleep(0.02)


async def measure(runs: int, workers: int, max_runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="natchet-bench-") as tmp:
        stack = DevStack(Path(tmp))
        await asyncio.to_thread(stack.start)
        try:
            settings = EngineSettings(stack.nats_url, stack.database_url, ("bench",))
            async with Engine(settings), contextlib.AsyncExitStack() as ctx:
                hatchet = Hatchet(settings=ClientSettings(nats_url=stack.nats_url, tenant="bench"))
                for i in range(workers):
                    w = hatchet.worker(f"bench-{i}", max_runs=max_runs)
                    w.register_workflow(one_step(hatchet))
                    task = asyncio.create_task(w.async_start())
                    ctx.push_async_callback(lambda t=task: asyncio.wait_for(t, 60))
                    ctx.push_async_callback(w.shutdown)
                    await w.ready.wait()
                db = await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True)
                ctx.push_async_callback(db.close)
                start = time.monotonic()
                refs: list[WorkflowRunRef] = await asyncio.gather(
                    *(hatchet.admin.aio_run_workflow("Once", {"i": i}) for i in range(runs))
                )
                await succeeded(db, runs)
                first = time.monotonic() - start
                start = time.monotonic()
                await asyncio.gather(*(hatchet.admin.aio_replay(r.workflow_run_id) for r in refs))
                await succeeded(db, 2 * runs)
                again = time.monotonic() - start
                hatchet.close()
        finally:
            await asyncio.to_thread(stack.stop)
    return {"runs": runs, "first_s": first, "replay_s": again}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-runs", type=int, default=8)
    args = parser.parse_args()
    r = asyncio.run(measure(args.runs, args.workers, args.max_runs))
    n = r["runs"]
    print(f"{n} one-step runs: {n / r['first_s']:.0f} runs/s ({r['first_s']:.2f}s)")
    print(f"{n} replays of them: {n / r['replay_s']:.0f} runs/s ({r['replay_s']:.2f}s)")
    print(f"replay / run time: x{r['replay_s'] / r['first_s']:.2f}")


if __name__ == "__main__":
    main()
