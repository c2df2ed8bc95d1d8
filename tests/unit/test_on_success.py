"""The on-success step (pure decisions): it runs once every DAG step succeeded, before the
run is SUCCEEDED; its failure fails the run (and runs the on-failure step); it is cancelled
when the run fails first; a crash between decisions is completed from the log."""

from __future__ import annotations

from typing import Any

from dispatcher import State, complete, fold
from dispatcher.snapshot import Snapshot, dump, load
from schemas import (
    RunFinished,
    RunRequested,
    RunStatus,
    StepDef,
    StepFinished,
    StepResult,
    Task,
    WorkflowDef,
)
from tests.unit.test_decide import NOW, SCOPE, apply, ok, queued_steps, verdicts

PAIR = WorkflowDef(
    name="Pair",
    version="v1",
    steps=(StepDef("a"), StepDef("b", ("a",))),
    on_failure=StepDef("mourn"),
    on_success=StepDef("celebrate"),
)


def started() -> tuple[State, str]:
    state = State()
    fold(state, SCOPE, PAIR)
    return state, apply(state, RunRequested("r1", "Pair", {"x": 1}))[0].run_id


def fail(run_id: str, step: str) -> Any:
    return StepResult(run_id, step, 1, 1, "w1", ok=False, error="boom")


def test_it_runs_after_the_dag_with_every_output_and_then_the_run_succeeds() -> None:
    state, run_id = started()
    apply(state, ok(run_id, "a"))
    after_b = apply(state, ok(run_id, "b"))
    assert not any(isinstance(m, RunFinished) for m in after_b)
    assert queued_steps(after_b) == [("celebrate", 1)]
    [task] = [m for m in after_b if isinstance(m, Task)]
    assert task.parent_outputs == {"a": {"a": 1}, "b": {"b": 1}}
    [end] = apply(state, ok(run_id, "celebrate"))
    assert isinstance(end, RunFinished) and end.status is RunStatus.SUCCEEDED
    cancelled = [v.step for v in end.steps if v.status is RunStatus.CANCELLED]
    assert cancelled == ["mourn"]


def test_its_failure_fails_the_run_after_the_on_failure_step() -> None:
    state, run_id = started()
    apply(state, ok(run_id, "a"))
    apply(state, ok(run_id, "b"))
    out = apply(state, fail(run_id, "celebrate"))
    assert queued_steps(out) == [("mourn", 1)]
    [task] = [m for m in out if isinstance(m, Task)]
    assert task.step_errors == {"celebrate": "boom"}
    [end] = apply(state, ok(run_id, "mourn"))
    assert isinstance(end, RunFinished) and end.status is RunStatus.FAILED
    assert "celebrate" in (end.error or "")


def test_a_failing_dag_never_runs_it() -> None:
    state, run_id = started()
    apply(state, fail(run_id, "a"))
    out = apply(state, ok(run_id, "mourn"))
    [end] = out
    assert end.status is RunStatus.FAILED
    by_step = {v.step: v for v in verdicts(out)}
    assert by_step["celebrate"].status is RunStatus.CANCELLED
    assert by_step["celebrate"].error == "not needed: the run failed"


def test_a_decision_cut_short_is_completed_and_snapshots_keep_it() -> None:
    state, run_id = started()
    apply(state, ok(run_id, "a"))
    # b's verdict stored, the on-success task lost in a crash: complete() offers it again.
    fold(state, SCOPE, StepFinished(run_id, "b", 1, 1, RunStatus.SUCCEEDED, output={"b": 1}))
    [decision] = complete(state, NOW)
    assert [m.message.step for m in decision if isinstance(m.message, Task)] == ["celebrate"]
    again = load(dump(Snapshot(1, state))).state
    assert again.runs[run_id].success_step() is not None
    assert again == state
