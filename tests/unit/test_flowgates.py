"""Priority's window and step keys as the gates decide them (``dispatcher.flowgates``):
no live worker holds a prioritized task with a reason naming that, and its
schedule_timeout fails it saying it was held; a run without a priority is never held;
a step key's second task waits, and goes when the first one's result is in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher import State, fold, step
from dispatcher.decide import due
from dispatcher.step import settle
from schemas import RunRequested, Scope, StepDef, StepResult, Task, WorkflowDef
from schemas.concurrency import ConcurrencyDef
from schemas.holds import StepHeld
from schemas.messages import RunFinished

SCOPE = Scope("acme", "default")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX = 1024 * 1024 - 1024


def _state(wf: WorkflowDef, capacity: int) -> State:
    state = State()
    state.capacity = lambda scope, workflow, now: capacity
    fold(state, SCOPE, wf)
    return state


def _apply(state: State, message: Any, now: dt.datetime = NOW) -> list[Any]:
    return [o.message for o in step(state, SCOPE, message, now, MAX)]


def test_no_live_worker_holds_a_prioritized_task_until_its_schedule_timeout_says_so() -> None:
    wf = WorkflowDef("P", "v1", (StepDef("a"),), schedule_timeout_s=5.0, default_priority=2)
    state = _state(wf, capacity=0)
    out = _apply(state, RunRequested("r1", "P", {}))
    held = [m for m in out if isinstance(m, StepHeld)]
    assert not [m for m in out if isinstance(m, Task)]
    assert "no live worker runs workflow 'P' (capacity 0)" in held[0].reason
    later = NOW + dt.timedelta(seconds=6)
    ended = [o.message for d in due(state, later) for o in settle(state, None, None, d, MAX, later)]
    finished = [m for m in ended if isinstance(m, RunFinished)]
    assert finished and "held back for 5s (schedule_timeout)" in (finished[0].error or "")


def test_a_run_without_a_priority_is_never_held() -> None:
    wf = WorkflowDef("P", "v1", (StepDef("a"),))
    out = _apply(_state(wf, capacity=0), RunRequested("r1", "P", {}))
    assert [m.step for m in out if isinstance(m, Task)] == ["a"]


def test_a_keys_second_task_waits_and_goes_when_the_first_ones_result_is_in() -> None:
    keyed = StepDef("a", concurrency=ConcurrencyDef("input.user", 1))
    state = _state(WorkflowDef("K", "v1", (keyed,)), capacity=0)
    first = _apply(state, RunRequested("r1", "K", {"user": "u"}))
    second = _apply(state, RunRequested("r2", "K", {"user": "u"}))
    other = _apply(state, RunRequested("r3", "K", {"user": "v"}))
    assert [m.run_id for m in first + second + other if isinstance(m, Task)] == ["r1", "r3"]
    held = [m for m in second if isinstance(m, StepHeld)]
    assert held[0].reason == "step concurrency key 'u' has 1 of 1 in flight"
    out = _apply(state, StepResult("r1", "a", 1, 1, "w", ok=True, output=1))
    assert [m.run_id for m in out if isinstance(m, Task)] == ["r2"]
