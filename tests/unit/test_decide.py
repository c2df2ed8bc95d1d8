"""The dispatcher's pure decisions: DAG progression, retries, failures, duplicates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher import Event, State, decide, due, event_run_id, fold, step
from schemas import (
    RunCancelRequested,
    RunFinished,
    RunRequested,
    RunStatus,
    Scope,
    StepAssigned,
    StepDef,
    StepFinished,
    StepResult,
    StepRetryScheduled,
    Task,
    WorkflowDef,
)

SCOPE = Scope("acme", "default")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DIAMOND = WorkflowDef(
    name="Diamond",
    version="v1",
    on_events=("order:placed",),
    steps=(
        StepDef("a"),
        StepDef("b", ("a",)),
        StepDef("c", ("a",), retries=1),
        StepDef("d", ("b", "c")),
    ),
)


MAX_BYTES = 1024 * 1024 - 1024


def apply(state: State, message: Any) -> list[Any]:
    """The dispatcher's transition: decide, keep it storable, fold it all."""
    return [o.message for o in step(state, SCOPE, message, NOW, MAX_BYTES)]


def registered() -> State:
    state = State()
    fold(state, SCOPE, DIAMOND)
    return state


def ok(run_id: str, step: str, attempt: int = 1, output: Any = None) -> StepResult:
    return StepResult(run_id, step, attempt, 1, "w1", ok=True, output=output or {step: 1})


def queued_steps(messages: list[Any]) -> list[tuple[str, int]]:
    return [(m.step, m.attempt) for m in messages if isinstance(m, Task)]


def verdicts(messages: list[Any]) -> list[StepFinished]:
    """Every step verdict in ``messages``: on its own, or carried by the run's end."""
    out: list[StepFinished] = []
    for m in messages:
        if isinstance(m, StepFinished):
            out.append(m)
        elif isinstance(m, RunFinished):
            out += m.steps
    return out


def test_event_creates_a_run_and_queues_the_roots() -> None:
    state = registered()
    out = apply(state, Event("order:placed", 7, {"n": 1}))
    run_id = event_run_id(SCOPE, 7, "Diamond")
    assert out[0].run_id == run_id
    assert out[0].trigger.event_id == "7"
    assert queued_steps(out) == [("a", 1)]
    [task] = [m for m in out if isinstance(m, Task)]
    assert task.input == {"n": 1}


def test_same_event_twice_creates_one_run() -> None:
    state = registered()
    assert apply(state, Event("order:placed", 7, {}))
    assert apply(state, Event("order:placed", 7, {})) == []


def test_event_for_another_key_or_namespace_creates_nothing() -> None:
    state = registered()
    assert apply(state, Event("order:cancelled", 1, {})) == []
    other = Scope("acme", "alice")
    assert decide(state, other, Event("order:placed", 2, {}), NOW) == []


def test_diamond_progresses_and_succeeds_once() -> None:
    state = registered()
    run_id = apply(state, RunRequested("r1", "Diamond", {}))[0].run_id
    after_a = apply(state, ok(run_id, "a"))
    assert queued_steps(after_a) == [("b", 1), ("c", 1)]
    [task_b] = [m for m in after_a if isinstance(m, Task) and m.step == "b"]
    assert task_b.parent_outputs == {"a": {"a": 1}}
    assert queued_steps(apply(state, ok(run_id, "b"))) == []  # d still waits for c
    after_c = apply(state, ok(run_id, "c"))
    assert queued_steps(after_c) == [("d", 1)]
    done = apply(state, ok(run_id, "d"))
    # the last verdict rides in the run's end: one message, not two
    assert [type(m).__name__ for m in done] == ["RunFinished"]
    assert done[0].status is RunStatus.SUCCEEDED
    assert [(v.step, v.status, v.output) for v in done[0].steps] == [
        ("d", RunStatus.SUCCEEDED, {"d": 1})
    ]
    assert apply(state, ok(run_id, "d")) == []  # a duplicate result changes nothing
    assert run_id in state.done and run_id not in state.runs


def test_duplicate_result_decides_nothing() -> None:
    state = registered()
    apply(state, RunRequested("r1", "Diamond", {}))
    assert apply(state, ok("r1", "a"))
    assert apply(state, ok("r1", "a")) == []


def test_failure_with_retries_left_queues_the_next_attempt() -> None:
    state = registered()
    apply(state, RunRequested("r1", "Diamond", {}))
    apply(state, ok("r1", "a"))
    failed = StepResult("r1", "c", 1, 1, "w1", ok=False, error="boom")
    assert queued_steps(apply(state, failed)) == [("c", 2)]
    assert apply(state, failed) == []  # the stale attempt-1 result again: nothing
    final = apply(state, StepResult("r1", "c", 2, 1, "w1", ok=False, error="boom again"))
    [end] = final
    assert isinstance(end, RunFinished) and end.status is RunStatus.FAILED
    assert "boom again" in end.error
    assert (end.steps[0].step, end.steps[0].status) == ("c", RunStatus.FAILED)
    # every step not over when the run ended is cancelled, so no step is left open
    cancelled = [v.step for v in verdicts(final) if v.status == "CANCELLED"]
    assert cancelled == ["b", "d"]


def test_unknown_workflow_is_rejected_once() -> None:
    state = registered()
    [rejected] = apply(state, RunRequested("r9", "Nope", {}))
    assert "Nope" in rejected.reason
    assert apply(state, RunRequested("r9", "Nope", {})) == []


def test_result_for_unknown_run_is_ignored() -> None:
    assert apply(registered(), ok("ghost", "a")) == []


BACKOFF = WorkflowDef(
    name="Backoff",
    version="v1",
    steps=(StepDef("s", retries=2, backoff_factor=2.0, backoff_max_s=3.0),),
    on_failure=StepDef("cleanup"),
    schedule_timeout_s=10.0,
)


def with_backoff() -> State:
    state = State()
    fold(state, SCOPE, BACKOFF)
    apply(state, RunRequested("r1", "Backoff", {}))
    return state


def fail(step: str, attempt: int, **kw: Any) -> StepResult:
    return StepResult("r1", step, attempt, 1, "w1", ok=False, error=f"e{attempt}", **kw)


def run_due(state: State, now: dt.datetime) -> list[Any]:
    out = []
    for decision in due(state, now):
        for o in decision:
            fold(state, SCOPE, o.message)
            out.append(o.message)
    return out


def test_backoff_schedules_the_retry_and_queues_it_when_due() -> None:
    state = with_backoff()
    [scheduled] = apply(state, fail("s", 1))
    assert isinstance(scheduled, StepRetryScheduled)
    assert scheduled.next_attempt == 2
    assert dt.datetime.fromisoformat(scheduled.due_at) == NOW + dt.timedelta(seconds=2)
    assert apply(state, fail("s", 1)) == []  # a duplicate failure schedules nothing more
    assert run_due(state, NOW + dt.timedelta(seconds=1)) == []
    assert queued_steps(run_due(state, NOW + dt.timedelta(seconds=2))) == [("s", 2)]
    assert run_due(state, NOW + dt.timedelta(seconds=2)) == []  # queued once
    [second] = apply(state, fail("s", 2))
    # 2 ** 2 = 4 s, capped at backoff_max_s = 3 s
    assert dt.datetime.fromisoformat(second.due_at) == NOW + dt.timedelta(seconds=3)


def test_non_retryable_error_fails_at_once_and_runs_on_failure_step() -> None:
    state = with_backoff()
    out = apply(state, fail("s", 1, non_retryable=True))
    assert out[0].status is RunStatus.FAILED
    [task] = [m for m in out if isinstance(m, Task)]
    assert task.step == "cleanup" and task.step_errors == {"s": "e1"}
    done = apply(state, StepResult("r1", "cleanup", 1, 1, "w1", ok=True, output={"ok": 1}))
    assert done[-1].status is RunStatus.FAILED
    assert "e1" in done[-1].error


def test_step_not_picked_up_in_time_fails_with_a_reason() -> None:
    state = with_backoff()
    assert run_due(state, NOW + dt.timedelta(seconds=9)) == []
    out = run_due(state, NOW + dt.timedelta(seconds=10))
    assert out[0].status is RunStatus.FAILED
    assert "not picked up by any worker within 10s (schedule_timeout)" in out[0].error


def test_assigned_step_does_not_time_out_in_the_queue() -> None:
    state = with_backoff()
    apply(state, StepAssigned("r1", "s", 1, 1, "w1", "worker"))
    assert run_due(state, NOW + dt.timedelta(seconds=60)) == []


SLOW_BACKOFF = WorkflowDef(
    name="SlowBackoff",
    version="v1",
    steps=(StepDef("s", retries=1, backoff_factor=60.0, backoff_max_s=60.0),),
    schedule_timeout_s=10.0,
)


def test_a_result_without_assigned_is_decided_as_with_it() -> None:
    """A fast step's worker appends no ``assigned``: its result alone decides the same."""
    for result in (ok("r1", "s"), fail("s", 1), fail("s", 1, non_retryable=True)):
        with_assigned, without = with_backoff(), with_backoff()
        apply(with_assigned, StepAssigned("r1", "s", 1, 1, "w1", "worker"))
        assert apply(without, result) == apply(with_assigned, result)
        assert without == with_assigned


def test_a_failed_result_without_assigned_holds_the_step_while_its_retry_waits() -> None:
    """The result carries its assignment: a backoff longer than the schedule timeout must
    not time the step out as if no worker had picked it up."""
    state = State()
    fold(state, SCOPE, SLOW_BACKOFF)
    apply(state, RunRequested("r1", "SlowBackoff", {}))
    [scheduled] = apply(state, StepResult("r1", "s", 1, 1, "w1", ok=False, error="e1"))
    assert isinstance(scheduled, StepRetryScheduled)
    assert state.runs["r1"].steps["s"].assigned
    assert run_due(state, NOW + dt.timedelta(seconds=30)) == []
    assert queued_steps(run_due(state, NOW + dt.timedelta(seconds=60))) == [("s", 2)]


def test_a_hand_back_without_assigned_puts_the_step_back_in_the_queue() -> None:
    """Handed back within the grace (no ``assigned``): queued again, its schedule timeout
    running from the hand-back, as when ``assigned`` preceded it."""
    state = with_backoff()
    back = dt.datetime.isoformat(NOW + dt.timedelta(seconds=5))
    assert apply(state, fail("s", 1, handed_back=True, finished_at=back)) == []
    step_s = state.runs["r1"].steps["s"]
    assert step_s.status is RunStatus.QUEUED and not step_s.assigned
    assert run_due(state, NOW + dt.timedelta(seconds=14)) == []
    [timed_out] = run_due(state, NOW + dt.timedelta(seconds=15))[:1]
    assert timed_out.status is RunStatus.FAILED and "schedule_timeout" in timed_out.error


def test_cancel_ends_the_run_and_every_open_step() -> None:
    state = with_backoff()
    out = apply(state, RunCancelRequested("r1", reason="user asked"))
    assert [(v.step, v.status) for v in verdicts(out)] == [
        ("s", RunStatus.CANCELLED),
        ("cleanup", RunStatus.CANCELLED),
    ]
    assert out[-1].status is RunStatus.CANCELLED and out[-1].error == "cancelled: user asked"
    assert apply(state, RunCancelRequested("r1")) == []


def test_handed_back_result_consumes_no_retry() -> None:
    state = with_backoff()
    assert apply(state, fail("s", 1, handed_back=True)) == []
    assert state.runs["r1"].steps["s"].attempt == 1


def test_messages_on_another_namespaces_subject_never_touch_a_run() -> None:
    """Run ids are only unique per tenant: a result, cancel or verdict for alice's run that
    arrives on bob's subjects decides and folds nothing (the subject is the truth)."""
    state = registered()
    run_id = "r1"
    apply(state, RunRequested(run_id, "Diamond", {}))
    before = repr(state)
    bob = Scope("acme", "bob")
    for message in (
        ok(run_id, "a"),
        RunCancelRequested(run_id),
        StepAssigned(run_id, "a", 1, 1, "w9", "evil"),
        StepFinished(run_id, "a", 1, 1, RunStatus.FAILED, error="forged"),
    ):
        assert decide(state, bob, message, NOW) == []
        fold(state, bob, message)
    assert repr(state) == before
    assert queued_steps(apply(state, ok(run_id, "a"))) == [("b", 1), ("c", 1)]
