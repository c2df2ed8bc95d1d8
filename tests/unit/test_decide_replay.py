"""Re-runs, decided purely: what a replay keeps, runs again and refuses, and that it folds
without the run it replays."""

from __future__ import annotations

from typing import Any

from dispatcher.folding import fold
from dispatcher.replay import Original, Replay, original_of
from dispatcher.state import State
from schemas import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepDef,
    StepFinished,
    Task,
    TriggerKind,
    WorkflowDef,
)
from tests.unit.test_decide import DIAMOND, SCOPE, apply, registered

ORIGINAL = Original("r1", "Diamond", {"n": 1}, RunStatus.FAILED, {"a": {"a": 1}, "c": {"c": 3}})


def replay(from_step: str | None, original: Original | None = ORIGINAL) -> list[Any]:
    req = RunRequested("r2", "", None, replay_of="r1", from_step=from_step)
    return apply(registered(), Replay(req, original))


def test_from_a_middle_step_keeps_what_is_not_downstream_and_queues_that_step() -> None:
    created, *tasks = replay("b")
    assert isinstance(created, RunCreated) and created.input == {"n": 1}
    assert created.trigger is not None and created.trigger.kind is TriggerKind.REPLAY
    assert (created.trigger.run_id, created.trigger.from_step) == ("r1", "b")
    assert created.kept == {"a": {"a": 1}, "c": {"c": 3}}
    assert [(t.step, t.parent_outputs) for t in tasks if isinstance(t, Task)] == [
        ("b", {"a": {"a": 1}})
    ]


def test_the_whole_run_keeps_nothing() -> None:
    created, task = replay(None)
    assert created.kept == {} and isinstance(task, Task) and task.step == "a"


def test_refusals_say_why() -> None:
    def reason(from_step: str | None, original: Original | None = ORIGINAL) -> str:
        [rejected] = replay(from_step, original)
        assert isinstance(rejected, RunRejected)
        return rejected.reason

    assert "needs the output of 'b'" in reason("d")  # b never succeeded in r1
    assert "has no step 'x'" in reason("x")
    assert "no run r1" in reason(None, None)
    running = Original("r1", "Diamond", {}, None, {})
    assert "has not ended" in reason(None, running)
    gone = Original("r1", "Gone", {}, RunStatus.SUCCEEDED, {})
    assert "any more" in reason(None, gone)
    never = Original("r1", "Diamond", None, RunStatus.FAILED, {}, created=False)
    assert "was rejected" in reason(None, never)
    bad = RunRequested("r3", "", None, replay_of="r1.>")
    [rejected] = apply(registered(), Replay(bad, ORIGINAL))
    assert "is not a run id" in rejected.reason


def test_a_replayed_run_folds_from_its_own_created_and_is_decided_once() -> None:
    state = registered()
    req = RunRequested("r2", "", None, replay_of="r1", from_step="b")
    created, _task = apply(state, Replay(req, ORIGINAL))
    assert apply(state, Replay(req, ORIGINAL)) == []  # a redelivered request: nothing new
    assert apply(state, req) == []  # undecided without the run it names
    rebuilt = State()
    fold(rebuilt, SCOPE, DIAMOND)
    fold(rebuilt, SCOPE, created)
    run = rebuilt.runs["r2"]
    assert {n: s.status for n, s in run.steps.items()} == {
        "a": RunStatus.SUCCEEDED,
        "b": None,
        "c": RunStatus.SUCCEEDED,
        "d": None,
    }


def test_the_original_is_folded_from_its_history_kept_outputs_included() -> None:
    created = RunCreated("r1", "Diamond", "v1", {}, DIAMOND.steps, kept={"a": 1})
    verdict = StepFinished("r1", "b", 1, 1, RunStatus.SUCCEEDED, output=2)
    failed = StepFinished("r1", "c", 1, 1, RunStatus.FAILED, error="x")
    end = RunFinished("r1", RunStatus.FAILED, steps=(failed,))
    original = original_of("r1", [created, verdict, end])
    assert original is not None
    assert original.outputs == {"a": 1, "b": 2} and original.status is RunStatus.FAILED
    assert original_of("r1", []) is None
    requested = original_of("r1", [RunRequested("r1", "Diamond", {})])
    assert requested is not None and requested.status is None


def test_an_on_failure_step_is_not_a_step_to_replay_from() -> None:
    wf = WorkflowDef(
        name="Diamond", version="v2", steps=(StepDef("a"),), on_failure=StepDef("undo")
    )
    state = State()
    fold(state, SCOPE, wf)
    req = RunRequested("r2", "", None, replay_of="r1", from_step="undo")
    [rejected] = apply(state, Replay(req, ORIGINAL))
    assert "has no step 'undo'" in rejected.reason


def test_a_replay_keeps_the_original_runs_metadata() -> None:
    created = RunCreated(
        "r1", "Diamond", "v1", {"n": 1}, DIAMOND.steps, additional_metadata={"customer": "acme"}
    )
    finished = RunFinished("r1", RunStatus.FAILED, "boom")
    original = original_of("r1", [created, finished])
    assert original is not None and original.metadata == {"customer": "acme"}
    again, *_tasks = replay(None, original)
    assert isinstance(again, RunCreated) and again.additional_metadata == {"customer": "acme"}
