"""Priority's window and step keys as the gates decide them (``dispatcher.flowgates``):
no live worker holds a prioritized task with a reason naming that, and its
schedule_timeout fails it saying it was held; a run without a priority is never held;
a step key's second task waits, and goes when the first one's result is in; a step key's
CANCEL_IN_PROGRESS cancels the oldest runs in flight and CANCEL_NEWEST the newest, ranked
by their runs' age, the same after a crash and whatever order the tasks come in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dispatcher import Output, State, fold, step
from dispatcher.decide import complete, decide, due
from dispatcher.step import settle
from schemas import RunRequested, RunStatus, Scope, StepDef, StepResult, Task, WorkflowDef, parse
from schemas.concurrency import ConcurrencyDef, LimitStrategy
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


# -- step keys' CANCEL_* strategies ------------------------------------------------------


def _cancelling(strategy: LimitStrategy, max_runs: int = 1, *, second: bool = False) -> State:
    """A workflow whose step ``x`` has a key with ``strategy`` (its first step, or, with
    ``second``, after ``a``), and ``y`` after ``x``."""
    keyed = StepDef(
        "x", ("a",) if second else (), concurrency=ConcurrencyDef("input.user", max_runs, strategy)
    )
    steps = (*((StepDef("a"),) if second else ()), keyed, StepDef("y", ("x",)))
    return _state(WorkflowDef("C", "v1", steps), capacity=0)


def _log(state: State, message: Any, now: dt.datetime = NOW) -> list[Output]:
    return step(state, SCOPE, message, now, MAX)


def _ends(out: list[Any]) -> dict[str, RunFinished]:
    return {m.run_id: m for m in out if isinstance(m, RunFinished)}


def test_cancel_in_progress_cancels_the_oldest_run_in_flight_before_the_new_task_goes() -> None:
    state = _cancelling(LimitStrategy.CANCEL_IN_PROGRESS)
    _apply(state, RunRequested("r1", "C", {"user": "u"}))
    out = _apply(state, RunRequested("r2", "C", {"user": "u"}))
    other = _apply(state, RunRequested("r3", "C", {"user": "v"}))  # another key: untouched
    ended = _ends(out)
    assert list(ended) == ["r1"] and ended["r1"].status is RunStatus.CANCELLED
    assert ended["r1"].error == (
        "cancelled: a newer task of step 'x' concurrency key 'u' took its place"
    )
    # the end comes before the task that took its place: every prefix keeps max_runs
    kinds = [(type(m).__name__, m.run_id) for m in out if isinstance(m, RunFinished | Task)]
    assert kinds == [("RunFinished", "r1"), ("Task", "r2")]
    assert [m.run_id for m in other if isinstance(m, Task)] == ["r3"] and not _ends(other)
    # the cancelled run's late result releases nothing: its downstream step never runs
    late = _apply(state, StepResult("r1", "x", 1, 1, "w", ok=True, output=1))
    assert not [m for m in late if isinstance(m, Task)]


def test_cancel_newest_cancels_the_new_run_and_never_offers_its_task() -> None:
    state = _cancelling(LimitStrategy.CANCEL_NEWEST, max_runs=2)
    first = _apply(state, RunRequested("r1", "C", {"user": "u"}))
    first += _apply(state, RunRequested("r2", "C", {"user": "u"}))
    out = _apply(state, RunRequested("r3", "C", {"user": "u"}))
    assert [m.run_id for m in first if isinstance(m, Task)] == ["r1", "r2"]
    assert not [m for m in out if isinstance(m, Task)]
    ended = _ends(out)
    assert list(ended) == ["r3"] and ended["r3"].status is RunStatus.CANCELLED
    assert ended["r3"].error == (
        "cancelled: step 'x' concurrency key 'u' already has 2 task(s) in flight, and this "
        "run's is the newest (CANCEL_NEWEST)"
    )
    assert {v.step: v.status for v in ended["r3"].steps} == {
        "x": RunStatus.CANCELLED,
        "y": RunStatus.CANCELLED,
    }
    # once r1's step is done, the key has room again: the next run goes
    _apply(state, StepResult("r1", "x", 1, 1, "w", ok=True, output=1))
    again = _apply(state, RunRequested("r4", "C", {"user": "u"}))
    assert [m.run_id for m in again if isinstance(m, Task)] == ["r4"] and not _ends(again)


@pytest.mark.parametrize(
    ("strategy", "loser"),
    [(LimitStrategy.CANCEL_IN_PROGRESS, "r1"), (LimitStrategy.CANCEL_NEWEST, "r2")],
)
def test_a_task_of_an_older_run_coming_in_late_is_ranked_by_its_run(
    strategy: LimitStrategy, loser: str
) -> None:
    """r2's first step ends first, so its keyed task is in flight when r1's (older) comes:
    CANCEL_IN_PROGRESS keeps the newest (r2) and cancels r1; CANCEL_NEWEST keeps the
    oldest (r1) and cancels r2, in flight."""
    state = _cancelling(strategy, second=True)
    _apply(state, RunRequested("r1", "C", {"user": "u"}))
    _apply(state, RunRequested("r2", "C", {"user": "u"}))
    first = _apply(state, StepResult("r2", "a", 1, 1, "w", ok=True, output=1))
    assert [m.run_id for m in first if isinstance(m, Task)] == ["r2"]
    out = _apply(state, StepResult("r1", "a", 1, 1, "w", ok=True, output=1))
    assert list(_ends(out)) == [loser]
    winner = "r2" if loser == "r1" else "r1"
    assert [m.run_id for m in out if isinstance(m, Task)] == ([] if winner == "r2" else ["r1"])
    assert set(state.runs) == {winner}


def test_deciding_again_or_completing_after_a_crash_cancels_nothing_twice_or_otherwise() -> None:
    state = _cancelling(LimitStrategy.CANCEL_IN_PROGRESS)
    wf = state.workflows[(SCOPE, "C")]
    log: list[Output] = [Output(SCOPE.workflow("C"), wf, "wf")]
    log += _log(state, RunRequested("r1", "C", {"user": "u"}))
    request = RunRequested("r2", "C", {"user": "u"})
    decision = _log(state, request)
    assert [type(o.message).__name__ for o in decision] == ["RunCreated", "RunFinished", "Task"]
    assert _log(state, request) == []  # the request redelivered: nothing new
    # a crash after each prefix of the decision: the rebuilt state completes the same rest
    for cut in range(len(decision) + 1):
        rebuilt = State()
        rebuilt.capacity = lambda scope, workflow, now: 0
        for o in log + decision[:cut]:
            fold(rebuilt, parse(o.subject).scope, o.message)
        rest = [o for d in complete(rebuilt, NOW) for o in settle(rebuilt, None, None, d, MAX, NOW)]
        if cut == 0:
            rest = _log(rebuilt, request)  # not even created: the request is redelivered
        assert [o.msg_id for o in rest] == [o.msg_id for o in decision[cut:]], cut
        assert [o.message for o in rest] == [o.message for o in decision[cut:]], cut


def test_several_tasks_of_a_key_in_one_pass_keep_the_newest_whatever_their_order() -> None:
    """Three runs' ``a`` results decided, their keyed tasks then settled in any order (a
    batch, or ``complete`` after a restart, has no fixed order): CANCEL_IN_PROGRESS with
    max_runs 2 keeps the two newest runs and cancels the oldest, whatever the order."""
    outcomes = set()
    for order in (["r1", "r2", "r3"], ["r3", "r2", "r1"], ["r2", "r3", "r1"]):
        state = _cancelling(LimitStrategy.CANCEL_IN_PROGRESS, max_runs=2, second=True)
        for run_id in ("r1", "r2", "r3"):
            _apply(state, RunRequested(run_id, "C", {"user": "u"}))
        results = {r: StepResult(r, "a", 1, 1, "w", ok=True, output=1) for r in order}
        decided = {r: decide(state, SCOPE, m, NOW) for r, m in results.items()}
        out: list[Any] = []
        for run_id in order:
            settled = settle(state, SCOPE, results[run_id], decided[run_id], MAX, NOW)
            out += [o.message for o in settled]
        outcomes.add((tuple(_ends(out)), tuple(sorted(state.runs))))
    assert outcomes == {(("r1",), ("r2", "r3"))}
