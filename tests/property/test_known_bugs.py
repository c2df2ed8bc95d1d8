"""Minimal reproducers of engine bugs the properties found, kept as regression tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher import State, due, fold, step
from schemas import RunRequested, StepDef, StepResult, Task, WorkflowDef
from tests.property.harness import MAX_BYTES, T0, Sim
from tests.property.history import SCOPE
from tests.property.strategies import REGISTERED_AT, Outcome, Request, Result, Wait


def feed(state: State, message: Any) -> list[Any]:
    return [o.message for o in step(state, SCOPE, message, T0, MAX_BYTES)]


def test_no_retry_is_released_once_the_run_is_failing() -> None:
    wf = WorkflowDef(
        name="wf",
        version="v1",
        steps=(StepDef("a", retries=1, backoff_factor=2.0), StepDef("b")),
        on_failure=StepDef("cleanup"),
    )
    state = State()
    fold(state, SCOPE, wf)
    feed(state, RunRequested("r1", "wf", {}))
    feed(state, StepResult("r1", "a", 1, 1, "w1", ok=False, error="flaky"))  # retry in 2 s
    feed(state, StepResult("r1", "b", 1, 1, "w1", ok=False, error="broken"))  # cleanup runs
    later = [m.message for d in due(state, T0 + dt.timedelta(seconds=2)) for m in d]
    # The run has failed and its on-failure step is running: step a must not run again.
    assert not [m for m in later if isinstance(m, Task)], later


def test_a_fast_steps_failure_holds_it_while_a_long_backoff_waits() -> None:
    """A fast step's worker appends no ``assigned``: its failed result must still count as
    the step taken, or a backoff longer than the schedule timeout fails it as never picked
    up (History's check: a schedule timeout only for a step no worker holds)."""
    wf = WorkflowDef(
        name="wf",
        version="v1",
        steps=(StepDef("a", retries=1, backoff_factor=10.0),),
        schedule_timeout_s=5.0,
        registered_at=REGISTERED_AT,
    )
    sim = Sim(wf)
    sim.act(Request(0))
    sim.act(Result(0, Outcome.ERROR, fast=True))  # retry in 10 s
    sim.act(Wait(6.0))
    assert ("r0", "a") not in sim.history.verdicts
    sim.act(Wait(4.0))
    assert sim.history.queued[("r0", "a")].attempt == 2
