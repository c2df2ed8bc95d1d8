"""Flow control's hold framework (``dispatcher.holds``): a gate keeps a ready step back
without offering its task, the step says why (``held``), and the task goes, with its own
dedup id, once the gate lets it; after a restart the log's ``held`` makes the task again."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest

from dispatcher import State, complete, due, fold
from dispatcher.decide import Output
from dispatcher.holds import Fail, Gate, Go, Hold, Verdict, release
from dispatcher.state import RunState, StepState
from schemas import (
    RunCancelRequested,
    RunFinished,
    RunRequested,
    RunStatus,
    Scope,
    StepDef,
    StepResult,
    Task,
    WorkflowDef,
)
from schemas.holds import HoldKind, StepHeld

# The module (``dispatcher.step`` the name is its function, re-exported by the package).
dstep = importlib.import_module("dispatcher.step")

SCOPE = Scope("acme", "default")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OPEN = NOW + dt.timedelta(seconds=10)
MAX_BYTES = 1024 * 1024 - 1024
WF = WorkflowDef(
    name="Pair",
    version="v1",
    steps=(StepDef("a"), StepDef("b"), StepDef("c", ("a", "b"))),
    schedule_timeout_s=60.0,
)


@attrs.define
class Curfew:
    """Holds step ``a`` until ``OPEN`` (a time to recheck), and step ``b`` while
    ``closed`` (no time: released when something changes); fails step ``c`` if ``fail``."""

    closed: bool = True
    fail: bool = False
    seen: list[str] = attrs.Factory(list)

    def __call__(
        self, state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
    ) -> Verdict:
        self.seen.append(task.step)
        if task.step == "a" and now < OPEN:
            return Hold(HoldKind.RATE_LIMIT, "a waits for OPEN", OPEN)
        if task.step == "b" and self.closed:
            return Hold(HoldKind.LABELS, "b waits for a worker", None)
        if task.step == "c" and self.fail:
            return Fail("c can never run here")
        return Go(subject=f"{SCOPE.prefix}.tasks.Pair.{task.step}.routed")


@contextmanager
def gates(*chosen: Gate) -> Iterator[None]:
    saved = dstep.GATES
    dstep.GATES = chosen
    try:
        yield
    finally:
        dstep.GATES = saved


def registered() -> State:
    state = State()
    fold(state, SCOPE, WF)
    return state


def apply(state: State, message: Any, now: dt.datetime = NOW) -> list[Output]:
    return dstep.step(state, SCOPE, message, now, MAX_BYTES)


def tick(state: State, now: dt.datetime) -> list[Output]:
    """What the service does each tick: a settle of nothing (the held tasks whose recheck
    came), then the due decisions."""
    out = dstep.settle(state, None, None, [], MAX_BYTES, now)
    for decision in due(state, now):
        out += dstep.settle(state, None, None, decision, MAX_BYTES, now)
    return out


def kinds(outputs: list[Output]) -> list[tuple[str, str]]:
    return [(type(o.message).__name__, getattr(o.message, "step", "")) for o in outputs]


def ok(step: str) -> StepResult:
    return StepResult("r1", step, 1, 1, "w1", ok=True, output={step: 1})


def test_a_held_step_says_why_once_and_goes_when_its_recheck_comes() -> None:
    gate = Curfew()
    with gates(gate):
        state = registered()
        out = apply(state, RunRequested("r1", "Pair", {}))
        assert kinds(out) == [("RunCreated", ""), ("StepHeld", "a"), ("StepHeld", "b")]
        held = [o for o in out if isinstance(o.message, StepHeld)]
        assert [o.msg_id for o in held] == ["r1:a:1:held:RATE_LIMIT", "r1:b:1:held:LABELS"]
        assert held[0].subject == SCOPE.run("r1", "held")
        assert held[0].message.reason == "a waits for OPEN"
        a = state.runs["r1"].steps["a"]
        assert (a.status, a.attempt, a.held, a.assigned) == (
            RunStatus.QUEUED, 1, (HoldKind.RATE_LIMIT,), False,
        )  # fmt: skip
        assert tick(state, NOW + dt.timedelta(seconds=5)) == []  # not yet, and said once
        [task] = tick(state, OPEN)
        assert (task.message.step, task.msg_id) == ("a", "r1:a:1:task")
        assert task.subject == f"{SCOPE.prefix}.tasks.Pair.a.routed"  # the gate's route
        assert state.runs["r1"].steps["a"].held == ()
        assert ("r1", "a") not in state.holds.tasks


def test_a_hold_with_no_recheck_waits_for_a_change() -> None:
    gate = Curfew()
    with gates(gate):
        state = registered()
        apply(state, RunRequested("r1", "Pair", {}))
        assert [o.message.step for o in tick(state, OPEN)] == ["a"]
        gate.closed = False
        assert tick(state, OPEN) == []  # b: no recheck due, nothing said to have changed
        state.holds.dirty = True  # what the service does when a gate's input changes
        [task] = tick(state, OPEN)
        assert (task.message.step, task.msg_id) == ("b", "r1:b:1:task")
        assert not state.holds.tasks


def test_a_failing_gate_fails_the_step_for_good() -> None:
    gate = Curfew(closed=False, fail=True)
    with gates(gate):
        state = registered()
        apply(state, RunRequested("r1", "Pair", {}))
        tick(state, OPEN)
        apply(state, ok("a"), OPEN)
        said, end = apply(state, ok("b"), OPEN)
        assert said.message.step == "b" and said.message.status is RunStatus.SUCCEEDED
        assert isinstance(end.message, RunFinished)
        assert end.message.status is RunStatus.FAILED
        assert "c can never run here" in (end.message.error or "")


def test_a_held_step_times_out_saying_what_held_it() -> None:
    with gates(Curfew()):
        state = registered()
        apply(state, RunRequested("r1", "Pair", {}))
        tick(state, OPEN)
        apply(state, ok("a"), OPEN)
        [end] = [o.message for o in tick(state, NOW + dt.timedelta(seconds=61))]
        assert isinstance(end, RunFinished) and end.status is RunStatus.FAILED
        failed = {v.step: v for v in end.steps}
        assert failed["b"].status is RunStatus.FAILED
        assert "held back for 60s (schedule_timeout)" in (failed["b"].error or "")
        assert "b waits for a worker" in (failed["b"].error or "")
        assert failed["c"].status is RunStatus.CANCELLED
        assert not state.holds.tasks


def test_cancelling_a_run_drops_its_held_tasks() -> None:
    with gates(Curfew()):
        state = registered()
        apply(state, RunRequested("r1", "Pair", {}))
        assert len(state.holds.tasks) == 2
        apply(state, RunCancelRequested("r1", reason="no"))
        assert not state.holds.tasks
        assert tick(state, OPEN) == []


def test_after_a_restart_the_held_task_is_made_again_with_its_dedup_id() -> None:
    with gates(Curfew()):
        live = registered()
        out = apply(live, RunRequested("r1", "Pair", {}))
        rebuilt = State()
        fold(rebuilt, SCOPE, WF)
        for o in out:
            fold(rebuilt, SCOPE, o.message)
        assert rebuilt == live and not rebuilt.holds.tasks  # the log holds no held task
        again = [
            o for d in complete(rebuilt, NOW) for o in dstep.settle(
                rebuilt, None, None, d, MAX_BYTES, NOW
            )
        ]  # fmt: skip
        assert again == []  # held again, for the kinds already said: nothing appended
        assert set(rebuilt.holds.tasks) == {("r1", "a"), ("r1", "b")}
        assert complete(rebuilt, NOW) == []  # held in memory: not made a third time
        [task] = tick(rebuilt, OPEN)
        [original] = [t for t in tick(live, OPEN)]
        assert task.msg_id == original.msg_id == "r1:a:1:task"
        assert task.body == original.body  # the same task: same time, same deadline


def test_two_tasks_of_one_decision_see_each_other() -> None:
    """Each task is folded before the next is judged (a gate counting offered tasks sees
    the first when judging the second)."""

    def one_at_a_time(
        state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
    ) -> Verdict:
        offered = [s for r in state.runs.values() for s in r.steps.values()]
        if any(s.status is RunStatus.QUEUED and not s.held for s in offered):
            return Hold(HoldKind.CONCURRENCY, "one at a time", None)
        return Go()

    with gates(one_at_a_time):
        state = registered()
        out = apply(state, RunRequested("r1", "Pair", {}))
        assert kinds(out) == [("RunCreated", ""), ("Task", "a"), ("StepHeld", "b")]


@pytest.mark.parametrize("kind", list(HoldKind))
def test_every_hold_kind_has_its_own_dedup_id(kind: HoldKind) -> None:
    def hold(state: State, run: RunState, step: StepState, task: Task, now: dt.datetime) -> Verdict:
        return Hold(kind, f"held for {kind}", None)

    with gates(hold):
        state = registered()
        out = apply(state, RunRequested("r1", "Pair", {}))
        assert f"r1:a:1:held:{kind}" in [o.msg_id for o in out]
        assert release(state, NOW, (hold,)) == []  # nothing changed: not even looked at
