"""Minimal reproducers of engine bugs the properties found, kept as regression tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher import State, due, fold, step
from schemas import RunRequested, RunStatus, StepDef, StepResult, Task, WorkflowDef
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from tests.property.harness import MAX_BYTES, T0, Sim
from tests.property.history import SCOPE
from tests.property.strategies import (
    REGISTERED_AT,
    Outcome,
    Request,
    Result,
    Suspend,
    Trigger,
    Wait,
)

CANCEL_IN_PROGRESS = LimitStrategy.CANCEL_IN_PROGRESS
CANCEL_NEWEST = LimitStrategy.CANCEL_NEWEST


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


def test_an_event_that_wakes_a_run_its_new_run_cancels_wakes_nothing() -> None:
    """One event starts a run whose keyed step (``CANCEL_IN_PROGRESS``) cancels a run
    waiting in a durable wait for that same event: the cancelled run must not be woken
    after its end in the same decision (History: an output after the run finished)."""
    wf = WorkflowDef(
        name="wf",
        version="v1",
        steps=(StepDef("a", concurrency=ConcurrencyDef('"k"', 1, CANCEL_IN_PROGRESS)),),
        on_events=("go",),
        registered_at=REGISTERED_AT,
    )
    sim = Sim(wf)
    sim.act(Request(0))
    sim.act(Suspend(0, None, False))  # r0's step a waits for an event "go"
    sim.act(Trigger())  # starts a run of wf, whose step a cancels r0
    assert sim.history.finished["r0"].status is RunStatus.CANCELLED
    sim.drain([Outcome.OK])


def test_a_run_a_tick_cancels_is_not_ended_again_by_the_same_tick() -> None:
    """A tick decides every run due before folding any: a retry whose task, by its step
    key's ``CANCEL_NEWEST``, cancels a newer run with a task timing out in the same tick
    must leave that run's timeout undecided (it ended twice: a dedup id reused)."""
    wf = WorkflowDef(
        name="wf",
        version="v1",
        steps=(
            StepDef("a"),
            StepDef(
                "b",
                parents=("a",),
                retries=1,
                backoff_factor=0.5,
                concurrency=ConcurrencyDef('"k"', 1, CANCEL_NEWEST),
            ),
        ),
        on_events=("go",),
        schedule_timeout_s=5.0,
        registered_at=REGISTERED_AT,
    )
    sim = Sim(wf)
    sim.act(Trigger())
    sim.act(Trigger())
    first, second = list(sim.history.created)  # in creation order
    sim.answer(first, "a", 1, Outcome.OK)
    sim.answer(first, "b", 1, Outcome.ERROR)  # a retry in 0.5 s
    sim.answer(second, "a", 1, Outcome.OK)  # its step b queued: nobody takes it
    sim.tick(5.0)  # the retry goes, cancelling the newer run; its timeout is stale
    assert sim.history.finished[second].status is RunStatus.CANCELLED
    sim.drain([Outcome.OK])
