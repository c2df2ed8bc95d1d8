"""A child run is never created twice: whatever a parent's attempts spawn (keys repeated,
attempts failing and retried, spawns after the parent's end, requests delivered again),
each child id has at most one ``created``, every child created while its parent was in
flight is linked to it, and a rebuild from the log is the state that lived through it."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import State, fold, step
from schemas import (
    RunCancelRequested,
    RunCreated,
    RunRequested,
    Scope,
    StepDef,
    StepResult,
    Trigger,
    TriggerKind,
    WorkflowDef,
)
from schemas.children import child_run_id

SCOPE = Scope("acme", "default")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PARENT = WorkflowDef(name="Parent", version="v1", steps=(StepDef("fan", retries=3),))
CHILD = WorkflowDef(name="Child", version="v1", steps=(StepDef("work"),))
PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

actions = st.lists(
    st.one_of(
        st.tuples(st.just("spawn"), st.integers(0, 4)),
        st.tuples(st.just("fail"), st.just(0)),
        st.tuples(st.just("succeed"), st.just(0)),
        st.tuples(st.just("cancel"), st.just(0)),
        st.tuples(st.just("child_done"), st.integers(0, 4)),
    ),
    max_size=30,
)


def spawn(key: int) -> RunRequested:
    k = str(key)
    trigger = Trigger(TriggerKind.CHILD, run_id="p", step="fan", key=k)
    return RunRequested(child_run_id(SCOPE, "p", "fan", k), "Child", {}, trigger=trigger)


@PURE
@given(actions)
def test_a_child_is_never_created_twice(script: list[tuple[str, int]]) -> None:
    state = State()
    log: list[Any] = [PARENT, CHILD]
    for m in log:
        fold(state, SCOPE, m)

    def apply(message: Any) -> None:
        log.append(message)
        log.extend(o.message for o in step(state, SCOPE, message, NOW, 1 << 20))

    apply(RunRequested("p", "Parent", {}))
    for kind, n in script:
        parent = state.runs.get("p")
        attempt = parent.steps["fan"].attempt if parent is not None else 1
        if kind == "spawn":
            apply(spawn(n))
        elif kind == "fail":
            apply(StepResult("p", "fan", attempt, 1, "w", ok=False, error="boom"))
        elif kind == "succeed":
            apply(StepResult("p", "fan", attempt, 1, "w", ok=True, output=1))
        elif kind == "cancel":
            apply(RunCancelRequested("p"))
        else:
            apply(StepResult(spawn(n).run_id, "work", 1, 1, "w", ok=True, output=1))
    created = Counter(m.run_id for m in log if isinstance(m, RunCreated))
    assert all(count == 1 for count in created.values())
    if "p" in state.runs:
        linked = set(state.runs["p"].children)
        assert linked == {c for c in created if c != "p" and c in state.runs}
    rebuilt = State()
    for m in log:
        fold(rebuilt, SCOPE, m)
    assert rebuilt == state
