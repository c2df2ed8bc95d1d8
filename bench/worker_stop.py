"""How long an idle worker takes to stop: from ``shutdown()`` until it has returned.

    .venv/bin/python -m bench.worker_stop [--stops 20]

An embedded nats-server and PostgreSQL and an engine for one tenant; a worker of one
workflow is started, left idle a moment (its pull requests outstanding) and stopped, over
and over. Every test that runs a worker pays this once, and so does every deploy.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from natchet.config import EngineSettings
from natchet.dev.embedded import EmbeddedPostgres, NatsServer
from natchet.engine import Engine
from worker import ClientSettings, Context, Hatchet
from worker.runtime import Worker

TENANT = "bench"


def _worker(url: str, n: int) -> tuple[Hatchet, Worker]:
    hatchet = Hatchet(settings=ClientSettings(nats_url=url, tenant=TENANT, namespace="default"))

    @hatchet.workflow(name="Idle", on_events=["idle"])
    class Idle:
        @hatchet.step()
        def step(self, context: Context) -> dict[str, int]:
            return {"n": n}

    worker = hatchet.worker(f"stop-{n}", max_runs=4)
    worker.register_workflow(Idle())
    return hatchet, worker


async def main(stops: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="natchet-bench-"))
    with NatsServer(root / "nats") as nats, EmbeddedPostgres(root / "pg") as pg:
        async with Engine(EngineSettings(nats.url, pg.url(), (TENANT,))):
            took: list[float] = []
            for n in range(stops):
                hatchet, worker = _worker(nats.url, n)
                running = asyncio.create_task(worker.async_start())
                await worker.ready.wait()
                await asyncio.sleep(0.3)  # idle: its pull requests are out
                start = time.perf_counter()
                await worker.shutdown()
                await running
                took.append(time.perf_counter() - start)
                hatchet.close()
    ms = sorted(t * 1000 for t in took)
    print(
        f"{stops} stops of an idle worker: median {statistics.median(ms):.1f} ms, "
        f"min {ms[0]:.1f}, max {ms[-1]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=20)
    asyncio.run(main(parser.parse_args().stops))
