"""Child runs: a spawn request is checked against its parent, a child is created once, and
a parent's cancellation ends its children in flight with it (issue 14)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from dispatcher import State, decide, fold, step
from dispatcher.snapshot import Snapshot, dump, load
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    Scope,
    StepDef,
    StepResult,
    Task,
    Trigger,
    TriggerKind,
    WorkflowDef,
)
from schemas.children import CHILD_RUN_NAMESPACE, child_run_id

SCOPE = Scope("acme", "default")
OTHER = Scope("acme", "other")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024
PARENT = WorkflowDef(name="Parent", version="v1", steps=(StepDef("fan", retries=1),))
CHILD = WorkflowDef(name="Child", version="v1", steps=(StepDef("work"),))


def apply(state: State, message: Any, scope: Scope = SCOPE) -> list[Any]:
    return [o.message for o in step(state, scope, message, NOW, MAX_BYTES)]


def started(parent_id: str = "p1") -> State:
    state = State()
    for scope in (SCOPE, OTHER):
        fold(state, scope, PARENT)
        fold(state, scope, CHILD)
    apply(state, RunRequested(parent_id, "Parent", {}))
    return state


def spawn(
    parent_id: str = "p1", key: str = "0", scope: Scope = SCOPE, run_id: str | None = None
) -> RunRequested:
    trigger = Trigger(TriggerKind.CHILD, run_id=parent_id, step="fan", key=key)
    child_id = run_id or child_run_id(scope, parent_id, "fan", key)
    return RunRequested(child_id, "Child", {"k": key}, trigger=trigger)


def test_a_spawn_creates_the_child_linked_to_its_parent() -> None:
    state = started()
    out = apply(state, spawn())
    [created] = [m for m in out if isinstance(m, RunCreated)]
    assert created.trigger == Trigger(TriggerKind.CHILD, run_id="p1", step="fan", key="0")
    assert [m.step for m in out if isinstance(m, Task)] == ["work"]
    assert list(state.runs["p1"].children) == [created.run_id]
    assert state.runs[created.run_id].parent == "p1"


def test_a_retried_parent_spawning_again_creates_nothing_more() -> None:
    state = started()
    for key in map(str, range(10)):
        apply(state, spawn(key=key))
    fail = StepResult("p1", "fan", 1, 1, "w1", ok=False, error="boom")
    assert [type(m) for m in apply(state, fail)] == [Task]  # attempt 2
    again = [m for key in map(str, range(10)) for m in apply(state, spawn(key=key))]
    assert again == []
    assert len(state.runs["p1"].children) == 10


def test_the_child_id_is_that_of_parent_step_and_key_not_of_the_attempt() -> None:
    a = child_run_id(SCOPE, "p1", "fan", "0")
    assert a == child_run_id(SCOPE, "p1", "fan", "0")
    assert a != child_run_id(SCOPE, "p1", "fan", "1")
    assert a != child_run_id(SCOPE, "p2", "fan", "0")
    assert a != child_run_id(OTHER, "p1", "fan", "0")


def rejected(out: list[Any]) -> str:
    [msg] = out
    assert isinstance(msg, RunRejected)
    return msg.reason


def test_a_spawn_naming_an_unknown_parent_is_rejected() -> None:
    state = started()
    reason = rejected(apply(state, spawn(parent_id="nobody")))
    assert "no run nobody in flight in acme.default" in reason


def test_a_spawn_from_another_namespace_cannot_reach_the_parent() -> None:
    state = started()
    reason = rejected(apply(state, spawn(scope=OTHER), scope=OTHER))
    assert "no run p1 in flight in acme.other" in reason
    assert not state.runs["p1"].children


def test_a_spawn_under_a_made_up_run_id_is_rejected() -> None:
    state = started()
    reason = rejected(apply(state, spawn(run_id="mine")))
    assert "has run id" in reason and "not mine" in reason


def test_a_spawn_naming_a_step_the_parent_lacks_is_rejected() -> None:
    state = started()
    trigger = Trigger(TriggerKind.CHILD, run_id="p1", step="nope", key="0")
    req = RunRequested(child_run_id(SCOPE, "p1", "nope", "0"), "Child", {}, trigger=trigger)
    assert "has no step 'nope'" in rejected(apply(state, req))


def test_a_spawn_after_the_parent_ended_is_rejected() -> None:
    state = started()
    apply(state, StepResult("p1", "fan", 1, 1, "w1", ok=True, output=1))
    assert "p1" not in state.runs
    assert "no run p1 in flight" in rejected(apply(state, spawn()))


def test_cancelling_a_parent_cancels_its_children_and_theirs_first() -> None:
    state = started()
    child = apply(state, spawn())[0].run_id
    trigger = Trigger(TriggerKind.CHILD, run_id=child, step="work", key="0")
    grandchild = child_run_id(SCOPE, child, "work", "0")
    apply(state, RunRequested(grandchild, "Child", {}, trigger=trigger))
    other = apply(state, spawn(key="1"))[0].run_id
    done = apply(state, StepResult(other, "work", 1, 1, "w1", ok=True, output=1))
    assert [type(m) for m in done] == [RunFinished]  # over: not cancelled again
    third = apply(state, spawn(key="2"))[0].run_id
    out = apply(state, RunCancelRequested("p1", "enough"))
    assert all(isinstance(m, RunFinished) and m.status is RunStatus.CANCELLED for m in out)
    assert [m.run_id for m in out] == [grandchild, child, third, "p1"]
    assert out[0].error == f"cancelled: its parent run {child} was cancelled"
    assert out[2].error == "cancelled: its parent run p1 was cancelled"
    assert state.runs == {}


def test_a_parent_that_fails_leaves_its_children_running() -> None:
    state = started()
    child = apply(state, spawn())[0].run_id
    apply(state, StepResult("p1", "fan", 1, 1, "w1", ok=False, error="boom", non_retryable=True))
    assert "p1" not in state.runs
    assert child in state.runs


def test_the_links_survive_a_snapshot() -> None:
    state = started()
    child = apply(state, spawn())[0].run_id
    loaded = load(dump(Snapshot(1, state))).state
    assert loaded == state
    assert list(loaded.runs["p1"].children) == [child]
    assert loaded.runs[child].parent == "p1"
    out = apply(loaded, RunCancelRequested("p1"))
    assert [m.run_id for m in out] == [child, "p1"]


def test_the_docs_spell_out_the_child_id_other_workers_must_compute() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    formula = f"uuid5({CHILD_RUN_NAMESPACE}, "
    assert formula in (docs / "protocol.md").read_text()
    assert formula in (docs / "triggers.md").read_text()
    name = "acme.default/p1/fan/0"
    assert child_run_id(SCOPE, "p1", "fan", "0") == str(uuid.uuid5(CHILD_RUN_NAMESPACE, name))


def test_a_cancel_cut_short_after_the_children_is_finished_when_delivered_again() -> None:
    """Only the children's ends were stored (the dispatcher stopped): the cancel request,
    not acked, comes back and ends the parent alone; nothing lands twice."""
    state = started()
    kids = [apply(state, spawn(key=k))[0].run_id for k in ("0", "1")]
    decided = [o.message for o in decide(state, SCOPE, RunCancelRequested("p1"), NOW)]
    assert [m.run_id for m in decided] == [*kids, "p1"]
    for m in decided[:-1]:  # the prefix the log holds
        fold(state, SCOPE, m)
    again = apply(state, RunCancelRequested("p1"))
    assert [(m.run_id, m.status) for m in again] == [("p1", RunStatus.CANCELLED)]
