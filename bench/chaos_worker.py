"""The chaos bench's worker: a diamond of short steps (50-300 ms), sync and async.

    fetch (sync) -> transform (async) ┐
                 -> enrich (sync)     ┴-> store (async)

Usage: ``python bench/chaos_worker.py NAME [MAX_RUNS] [GRACE_SECONDS]`` with the usual
``HATCHET_CLIENT_*`` environment. ``store`` checks its parents' outputs, so a step that ran
on stale or mixed-up input fails the run instead of passing unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from typing import Any

from worker import Context, Hatchet

WORKFLOW = "Chaos"
EVENT_KEY = "chaos:load"
STEPS = ("fetch", "transform", "enrich", "store")

hatchet = Hatchet()


def duration_s(context: Context) -> float:
    """50-300 ms, the same for every attempt of a step of a run."""
    key = f"{context.workflow_run_id()}:{context.step_name}".encode()
    h = int.from_bytes(hashlib.blake2b(key, digest_size=2).digest(), "big")
    return 0.05 + (h % 251) / 1000


def busy_sync(context: Context) -> None:
    """Sleep in small slices, returning early once the attempt is cancelled."""
    end = time.monotonic() + duration_s(context)
    while time.monotonic() < end and not context.cancelled:
        time.sleep(0.01)


@hatchet.workflow(name=WORKFLOW, on_events=[EVENT_KEY])
class Chaos:
    @hatchet.step()
    def fetch(self, context: Context) -> dict[str, Any]:
        context.log(f"fetch attempt {context.attempt} delivery {context.delivery}")
        busy_sync(context)
        return {"n": context.workflow_input()["n"]}

    @hatchet.step(parents=["fetch"])
    async def transform(self, context: Context) -> dict[str, Any]:
        await asyncio.sleep(duration_s(context))
        return {"double": context.step_output("fetch")["n"] * 2}

    @hatchet.step(parents=["fetch"])
    def enrich(self, context: Context) -> dict[str, Any]:
        busy_sync(context)
        return {"next": context.step_output("fetch")["n"] + 1}

    @hatchet.step(parents=["transform", "enrich"])
    async def store(self, context: Context) -> dict[str, Any]:
        await asyncio.sleep(duration_s(context))
        n = context.workflow_input()["n"]
        double, nxt = context.step_output("transform")["double"], context.step_output("enrich")
        if double != 2 * n or nxt["next"] != n + 1:
            raise ValueError(f"parents' outputs do not match input {n}: {double}, {nxt}")
        return {"n": n, "sum": double + nxt["next"]}


def main(argv: list[str]) -> None:
    name = argv[1] if len(argv) > 1 else "chaos-worker"
    max_runs = int(argv[2]) if len(argv) > 2 else 8
    grace_s = float(argv[3]) if len(argv) > 3 else None
    worker = hatchet.worker(name, max_runs=max_runs, grace_seconds=grace_s)
    worker.register_workflow(Chaos())
    worker.start()


if __name__ == "__main__":
    main(sys.argv)
