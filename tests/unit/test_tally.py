"""``dispatcher.tally``: what the engine's task counters count, decision by decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dispatcher import Output, State, decide, due, fold, fold_all
from dispatcher.policy import iso
from dispatcher.step import settle
from dispatcher.tally import Tally, observe, outcomes
from schemas import (
    RunCancelRequested,
    RunRequested,
    StepAssigned,
    StepDef,
    StepResult,
    WorkflowDef,
)
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from schemas.ratelimits import RateLimitDef, RateLimitDuration, RateLimitSet
from schemas.subjects import Scope

SCOPE = Scope("acme", "default")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX = 1024 * 1024 - 1024
WF = WorkflowDef(
    name="W",
    version="v1",
    steps=(StepDef("a", retries=2), StepDef("b", ("a",))),
    schedule_timeout_s=10,
)
BACKOFF = WorkflowDef(name="B", version="v1", steps=(StepDef("s", retries=1, backoff_factor=2),))


def registered() -> State:
    state = State()
    fold(state, SCOPE, WF)
    fold(state, SCOPE, BACKOFF)
    return state


def act(state: State, message: Any, now: dt.datetime = T0) -> dict[str, int]:
    """Decide on ``message`` and fold it, as the service does; what the tally counted."""
    outputs = decide(state, SCOPE, message, now)
    tally = observe(state, message, outputs)
    fold_all(state, SCOPE, message, outputs)
    return counts(tally)


def counts(tally: Tally) -> dict[str, int]:
    out: dict[str, int] = {}
    for (what, _ns, _wf), n in tally.counts.items():
        out[what] = out.get(what, 0) + n
    return out


def result(run: str, step: str, attempt: int, ok: bool, delivery: int = 1) -> StepResult:
    return StepResult(
        run,
        step,
        attempt,
        delivery,
        "w1",
        ok=ok,
        error=None if ok else "boom",
        started_at=iso(T0 + dt.timedelta(seconds=2)),
    )


def test_a_run_counts_its_tasks_once_each_and_its_unoffered_steps_not_at_all() -> None:
    state = registered()
    assert act(state, RunRequested("r1", "W", {})) == {"created": 1}
    assert act(state, result("r1", "a", 1, ok=False)) == {"retried": 1}  # at once, no backoff
    assert act(state, result("r1", "a", 2, ok=True)) == {"succeeded": 1, "created": 1}
    # Cancelled while b runs: b counted; nothing else was offered.
    assert act(state, RunCancelRequested("r1")) == {"cancelled": 1}


def test_a_retry_with_backoff_is_counted_when_scheduled_not_again_when_due() -> None:
    state = registered()
    act(state, RunRequested("r2", "B", {}))
    assert act(state, result("r2", "s", 1, ok=False)) == {"retried": 1}
    [decision] = due(state, T0 + dt.timedelta(seconds=3))
    tally = observe(state, None, decision)
    assert counts(tally) == {}  # the due retry's task: counted when it was scheduled
    fold_all(state, SCOPE, None, decision)
    assert act(state, result("r2", "s", 2, ok=False)) == {"failed": 1}


def test_a_step_nobody_takes_times_out_once() -> None:
    state = registered()
    act(state, RunRequested("r3", "W", {}))
    [decision] = due(state, T0 + dt.timedelta(seconds=11))
    assert counts(observe(state, None, decision)) == {"failed": 1, "timed_out": 1}


def test_the_first_delivery_taken_is_a_wait_and_a_later_one_a_reassignment() -> None:
    state = registered()
    act(state, RunRequested("r4", "W", {}))
    start = iso(T0 + dt.timedelta(seconds=2))
    first = StepAssigned("r4", "a", 1, 1, "w1", "one", started_at=start)
    tally = observe(state, first, [])
    assert tally.waits == [("default", "W", 2.0)] and not tally.counts
    fold(state, SCOPE, first)
    second = StepAssigned("r4", "a", 1, 2, "w2", "two", started_at=start)
    tally = observe(state, second, [])
    assert counts(tally) == {"reassigned": 1} and not tally.waits
    fold(state, SCOPE, second)
    # The result of that same delivery takes nothing new.
    assert counts(observe(state, result("r4", "a", 1, ok=True, delivery=2), [])) == {}


# -- what flow control adds to a decision ------------------------------------------------


def _settled(state: State, message: Any, now: dt.datetime = T0) -> dict[str, int]:
    """Decide on ``message`` and settle it through the gates and admissions, as the service
    does: the decision observed before it is folded, and what flow control adds shown to
    the tally (``seen``)."""
    outputs = decide(state, SCOPE, message, now)
    tally = observe(state, message, outputs)

    def seen(added: list[Output], withdrawn: list[Output]) -> None:
        tally.add(outcomes(state, added, withdrawn=withdrawn))

    settle(state, SCOPE, message, outputs, MAX, now, seen=seen)
    return {what: n for what, n in counts(tally).items() if n}


def _keyed(strategy: LimitStrategy, *, at: str = "step") -> State:
    spec = ConcurrencyDef("input.user", 1, strategy)
    if at == "step":
        wf = WorkflowDef("K", "v1", (StepDef("x", concurrency=spec), StepDef("y", ("x",))))
    else:
        wf = WorkflowDef("K", "v1", (StepDef("x"), StepDef("y", ("x",))), concurrency=spec)
    state = State()
    fold(state, SCOPE, wf)
    return state


@pytest.mark.parametrize("at", ["step", "workflow"])
def test_a_run_cancelled_in_progress_by_its_key_is_counted_cancelled(at: str) -> None:
    state = _keyed(LimitStrategy.CANCEL_IN_PROGRESS, at=at)
    assert _settled(state, RunRequested("r1", "K", {"user": "u"})) == {"created": 1}
    assert _settled(state, RunRequested("r2", "K", {"user": "u"})) == {
        "created": 1,
        "cancelled": 1,
    }


@pytest.mark.parametrize("at", ["step", "workflow"])
def test_the_newest_run_cancelled_by_its_key_counts_no_task(at: str) -> None:
    """Its step never went (attempt 0 in the read model): neither created nor cancelled,
    so created = succeeded + failed + cancelled + in flight holds."""
    state = _keyed(LimitStrategy.CANCEL_NEWEST, at=at)
    assert _settled(state, RunRequested("r1", "K", {"user": "u"})) == {"created": 1}
    assert _settled(state, RunRequested("r2", "K", {"user": "u"})) == {}
    assert "r2" in state.done and "r1" in state.runs


def test_a_first_task_dropped_when_a_gate_fails_its_run_counts_no_task() -> None:
    """Two first steps; one takes more units than its rate limit allows (a gate fails it,
    and the run with it): the other's task, decided beside it, never goes (its step ends
    at attempt 0), so only the failed one counts."""
    too_big = RateLimitDef(static_key="openai", units=4)
    wf = WorkflowDef("R", "v1", (StepDef("big", rate_limits=(too_big,)), StepDef("small")))
    state = State()
    fold(state, SCOPE, wf)
    fold(state, SCOPE, RateLimitSet("openai", 3, RateLimitDuration.SECOND))
    assert _settled(state, RunRequested("r1", "R", {})) == {"created": 1, "failed": 1}
    assert "r1" in state.done
