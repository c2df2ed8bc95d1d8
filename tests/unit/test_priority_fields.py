"""Priority and step-level concurrency as declared and carried (issue 15): hashed into the
version only when set, checked at declaration, and a run's priority (its trigger's, else
its workflow's default) on its ``created`` and tasks; a bad one is a recorded rejection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import orjson
import pytest

from dispatcher import Event, State, fold, step
from eventstore import ConfigError
from schemas import RunCreated, RunRejected, RunRequested, Scope, StepDef, Task, WorkflowDef
from schemas.codec import encode
from schemas.definition import workflow_version
from schemas.priority import header_priority, priority_problem
from worker import ConcurrencyExpression, ConcurrencyLimitStrategy, Hatchet
from worker.declare import spec_of
from worker.options import priority_option

SCOPE = Scope("acme", "default")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024


def _wire(wf: WorkflowDef) -> dict[str, Any]:
    return orjson.loads(encode(wf))  # type: ignore[no-any-return]


def test_unset_priority_and_step_concurrency_keep_the_version_set_ones_change_it() -> None:
    wf = WorkflowDef(name="W", version="", steps=(StepDef("a"), StepDef("b", ("a",))))
    base = _wire(wf)
    legacy = {
        **base,
        "steps": [{k: v for k, v in s.items() if k != "concurrency"} for s in base["steps"]],
    }
    del legacy["default_priority"]
    assert workflow_version(base) == workflow_version(legacy)
    assert workflow_version(_wire(attrs.evolve(wf, default_priority=2))) != workflow_version(base)
    keyed = StepDef("b", ("a",), concurrency={"expression": "input.u", "max_runs": 1})
    assert workflow_version(_wire(attrs.evolve(wf, steps=(StepDef("a"), keyed)))) != (
        workflow_version(base)
    )


def test_the_sdk_declares_default_priority_and_step_concurrency_v1_and_v0() -> None:
    hatchet = Hatchet()
    wf = hatchet.workflow(name="Prio", default_priority=2)
    per_user = ConcurrencyExpression(expression="input.user_id", max_runs=1)

    @wf.task(concurrency=per_user)
    def send(input: Any, ctx: Any) -> None: ...

    definition = wf.definition
    assert definition.default_priority == 2
    assert definition.steps[0].concurrency is not None
    assert definition.steps[0].concurrency.expression == "input.user_id"

    @hatchet.workflow(default_priority=3)
    class PrioV0:
        @hatchet.step(concurrency=per_user)
        def one(self, ctx: Any) -> None: ...

    v0 = PrioV0._natchet_workflow.definition  # type: ignore[attr-defined]
    assert v0.default_priority == 3 and v0.steps[0].concurrency is not None


@pytest.mark.parametrize("bad", [0, 4, "3", 2.5, True])
def test_a_priority_outside_one_to_three_is_a_config_error(bad: Any) -> None:
    hatchet = Hatchet()
    with pytest.raises(ConfigError, match=r"default_priority must be 1 \(low\), 2 \(medium\) or 3"):
        hatchet.workflow(name="Bad", default_priority=bad)
    with pytest.raises(ConfigError, match=r"options\.priority must be"):
        priority_option({"priority": bad})


@pytest.mark.parametrize("strategy", list(ConcurrencyLimitStrategy))
def test_step_concurrency_takes_every_strategy_in_v1_and_v0(
    strategy: ConcurrencyLimitStrategy,
) -> None:
    hatchet = Hatchet()
    wf = hatchet.workflow(name="Steps")
    spec = ConcurrencyExpression("input.u", 2, strategy)
    wf.task(concurrency=spec)(lambda i, c: None)
    declared = wf.definition.steps[0].concurrency
    assert declared is not None and declared.limit_strategy is strategy
    assert declared.max_runs == 2

    @hatchet.workflow()
    class StepsV0:
        @hatchet.step(concurrency=spec)
        def only(self, ctx: Any) -> None: ...

    v0 = spec_of(StepsV0()).definition.steps[0].concurrency
    assert v0 is not None and v0.limit_strategy is strategy


def test_step_concurrency_checks_its_expression_and_names_the_step() -> None:
    wf = Hatchet().workflow(name="Steps")
    with pytest.raises(ConfigError, match="step 'bad': concurrency expression"):
        wf.task(name="bad", concurrency=ConcurrencyExpression("input.(", 1))(lambda i, c: None)
    with pytest.raises(ConfigError, match=r"step 'low': concurrency max_runs"):
        wf.task(name="low", concurrency=ConcurrencyExpression("input.u", 0))(lambda i, c: None)


def test_header_priority() -> None:
    assert header_priority(None) == (None, None)
    assert header_priority(" 3 ") == (3, None)
    value, why = header_priority("urgent")
    assert value is None and why is not None and "Natchet-Priority" in why
    assert priority_problem(None) is None


def _state(default_priority: int | None = None) -> State:
    state = State()
    wf = WorkflowDef(
        name="W",
        version="v1",
        steps=(StepDef("a"),),
        on_events=("go",),
        default_priority=default_priority,
    )
    fold(state, SCOPE, wf)
    return state


def _apply(state: State, message: Any) -> list[Any]:
    return [o.message for o in step(state, SCOPE, message, NOW, MAX_BYTES)]


def test_a_run_has_its_requests_priority_else_its_workflows_default_on_created_and_tasks() -> None:
    state = _state(default_priority=2)
    out = _apply(state, RunRequested("r1", "W", {}, priority=3))
    assert [m.priority for m in out if isinstance(m, RunCreated | Task)] == [3, 3]
    out = _apply(state, RunRequested("r2", "W", {}))
    assert [m.priority for m in out if isinstance(m, RunCreated | Task)] == [2, 2]
    out = _apply(_state(), RunRequested("r3", "W", {}))
    assert [m.priority for m in out if isinstance(m, RunCreated | Task)] == [None, None]


def test_a_request_with_a_bad_priority_is_rejected_with_why() -> None:
    out = _apply(_state(), RunRequested("r1", "W", {}, priority=7))
    assert len(out) == 1 and isinstance(out[0], RunRejected)
    assert "priority must be 1 (low), 2 (medium) or 3 (high), not 7" in out[0].reason


def test_an_events_priority_header_sets_its_runs_priority_and_a_bad_one_rejects_them() -> None:
    state = _state()
    out = _apply(state, Event("go", 1, {}, priority=3))
    assert [m.priority for m in out if isinstance(m, RunCreated | Task)] == [3, 3]
    _, why = header_priority("9")
    out = _apply(state, Event("go", 2, {}, priority_error=why))
    assert len(out) == 1 and isinstance(out[0], RunRejected)
    assert "Natchet-Priority header must be 1, 2 or 3" in out[0].reason
