"""The hot-path bench's natchet worker: one process, one NATS connection, the SDK.

    python bench/hot_worker.py NAME MAX_RUNS WORKFLOW

with ``HATCHET_CLIENT_*`` and ``BENCH_RECORD_DIR`` in the environment. Two workflows,
both triggered by events whose body is ``{"t": <creation time>, "k": <kind>, "s":
<scenario>}``:

* ``Noop`` on ``bench:noop``: one async step that returns at once;
* ``Diamond`` on ``bench:diamond``: ``a -> (b, c) -> d``, all returning at once, ``c`` a
  sync step (a thread), like ``bench/throughput.py``'s.

A worker registers the one workflow ``WORKFLOW`` (``noop`` or ``diamond``) its scenario
uses, so its figures measure that workflow alone (a worker that registered both stalled
on the baseline engine, docs/benchmarks.md). Each step first records its start
(:mod:`bench.hot_record`). Prints ``READY`` once the
worker is registered and taking work; SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from bench.hot_record import record
from eventstore import run_main
from worker import Context, Hatchet

NOOP_EVENT = "bench:noop"
DIAMOND_EVENT = "bench:diamond"

hatchet = Hatchet()


def _note(context: Context, step: str = "") -> None:
    """Record the start: kind ``k`` of the body (``n``, ``d``, ``w`` for warm-up), plus the
    step's name in a diamond (``da`` ... ``dd``)."""
    body = context.workflow_input()
    record(body["s"], body["k"] + step, body["t"])


@hatchet.workflow(name="Noop", on_events=[NOOP_EVENT])
class Noop:
    @hatchet.step()
    async def noop(self, context: Context) -> dict[str, Any]:
        _note(context)
        return {}


@hatchet.workflow(name="Diamond", on_events=[DIAMOND_EVENT])
class Diamond:
    @hatchet.step()
    async def a(self, context: Context) -> int:
        _note(context, "a")
        return 1

    @hatchet.step(parents=["a"])
    async def b(self, context: Context) -> int:
        _note(context, "b")
        return 2

    @hatchet.step(parents=["a"])
    def c(self, context: Context) -> int:
        _note(context, "c")
        return 3

    @hatchet.step(parents=["b", "c"])
    async def d(self, context: Context) -> int:
        _note(context, "d")
        return 4


WORKFLOWS = {"noop": Noop, "diamond": Diamond}


async def serve(name: str, max_runs: int, workflow: str) -> None:
    worker = hatchet.worker(name, max_runs=max_runs, grace_seconds=5)
    worker.register_workflow(WORKFLOWS[workflow]())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print("READY", flush=True)
        await stop.wait()


def main(argv: list[str]) -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # As worker.start() runs a user's worker: on uvloop where it is installed.
    run_main(serve(argv[1], int(argv[2]), argv[3]))


if __name__ == "__main__":
    main(sys.argv)
