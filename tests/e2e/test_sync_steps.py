"""Sync steps that never look at ``context.cancelled``: past their timeout, or when their
run is cancelled, the worker interrupts their thread, says so in the attempt's error, and
frees the slot only once the thread has ended (so ``max_runs`` stays true)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from natchet.dev.embedded import NatsServer
from natchet.engine import Engine
from tests.conftest import eventually, running
from tests.support import hatchet_for, run_ends
from worker import Context, Hatchet, WorkflowRunError


class Spinner:
    """Counts the step threads running at once, and those that have ended. ``brake`` ends
    them all at teardown, so a worker that cannot interrupt them does not hang the tests."""

    def __init__(self) -> None:
        self.brake = threading.Event()
        self.lock = threading.Lock()
        self.started = 0
        self.now = 0
        self.peak = 0
        self.ended = 0

    def spin(self) -> None:
        with self.lock:
            self.started += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            while not self.brake.is_set():  # never looks at context.cancelled
                time.sleep(0.05)
        finally:
            with self.lock:
                self.now -= 1
                self.ended += 1


def spinning(hatchet: Hatchet, spinner: Spinner, **step: Any) -> Any:
    @hatchet.workflow(name="Spins")
    class Spins:
        @hatchet.step(**step)
        def spin(self, context: Context) -> None:
            spinner.spin()

    return Spins()


async def test_a_sync_step_past_its_timeout_is_interrupted(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    """Defect 8: a 1 s timeout stops a sync step looping in Python. Both attempts fail with
    the timeout reason, both threads end, and never more than max_runs=1 run at once (the
    retry starts only once the first thread has ended)."""
    hatchet = hatchet_for(nats_server, tenant_name)
    spinner = Spinner()
    worker = hatchet.worker("spinner", max_runs=1)
    worker.register_workflow(spinning(hatchet, spinner, timeout="1s", retries=1))
    try:
        async with running(worker):
            ref = await hatchet.admin.aio_run_workflow("Spins", {})
            run = await run_ends(db, ref.workflow_run_id, timeout_s=30)
            await eventually(lambda: spinner.ended == 2, timeout_s=10)
    finally:
        spinner.brake.set()
    hatchet.close()
    assert run["status"] == "FAILED"
    attempts = run["steps"][0]["attempts"]
    assert [a["status"] for a in attempts] == ["FAILED", "FAILED"]
    for attempt in attempts:
        assert attempt["error"].startswith("TimeoutError: step timed out after 1s"), attempt
        assert "the step's thread was interrupted" in attempt["error"], attempt
    assert spinner.started == 2 and spinner.peak == 1


async def test_cancelling_a_run_interrupts_its_sync_step(
    nats_server: NatsServer, engine: Engine, db: psycopg.AsyncConnection[Any], tenant_name: str
) -> None:
    hatchet = hatchet_for(nats_server, tenant_name)
    spinner = Spinner()
    worker = hatchet.worker("spinner", max_runs=1)
    worker.register_workflow(spinning(hatchet, spinner, timeout="60s"))
    try:
        async with running(worker):
            ref = await hatchet.admin.aio_run_workflow("Spins", {})
            await eventually(lambda: spinner.started == 1)
            await hatchet.admin.aio_cancel(ref.workflow_run_id)
            with pytest.raises(WorkflowRunError, match="CANCELLED"):
                await ref.result()
            await eventually(lambda: spinner.ended == 1, timeout_s=10)

            async def recorded() -> dict[str, Any] | None:
                run = await run_ends(db, ref.workflow_run_id)
                [attempt] = run["steps"][0]["attempts"]
                # Until the worker's result is in, the read model says the run ended first.
                return attempt if "cancelled:" in (attempt["error"] or "") else None

            attempt = await eventually(recorded)
            assert worker.slots.running == 0
    finally:
        spinner.brake.set()
    hatchet.close()
    assert "the step's thread was interrupted" in attempt["error"], attempt
