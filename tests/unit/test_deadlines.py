"""``due()`` from the deadline heap, on many runs: each retry and schedule timeout decided
at its moment and not before, stale entries deciding nothing, the state loaded from a
snapshot deciding the same; every call checked against the scan of every run it replaced
(``tests.property.scan``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dispatcher import State, fold, step
from dispatcher.policy import iso
from dispatcher.snapshot import Snapshot, dump, load
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
    Task,
    WorkflowDef,
)
from tests.property.scan import assert_indexed, checked_due

SCOPE = Scope("acme", "default")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024
TIMEOUT = "(schedule_timeout)"
# One step, retried once 10 s (10.0 ** 1) after it fails; 30 s to be picked up.
ONE = WorkflowDef(
    name="one",
    version="v1",
    steps=(StepDef("a", retries=1, backoff_factor=10.0),),
    schedule_timeout_s=30.0,
)
# Two roots (a retried 2 s after it fails), a cleanup step; 5 s to be picked up.
TWO = WorkflowDef(
    name="two",
    version="v1",
    steps=(StepDef("a", retries=2, backoff_factor=2.0), StepDef("b")),
    on_failure=StepDef("cleanup"),
    schedule_timeout_s=5.0,
)


def at(seconds: float = 0, ms: int = 0, us: int = 0) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds, milliseconds=ms, microseconds=us)


def registered(*wfs: WorkflowDef) -> State:
    state = State()
    for wf in wfs:
        fold(state, SCOPE, wf)
    return state


def feed(state: State, message: Any, now: dt.datetime) -> list[Any]:
    return [o.message for o in step(state, SCOPE, message, now, MAX_BYTES)]


def tick(state: State, now: dt.datetime, *, snapshot: bool = True) -> list[Any]:
    """``due`` (checked), each decision folded in turn as the service does."""
    out = []
    for decision in checked_due(state, now, snapshot=snapshot):
        for o in decision:
            fold(state, SCOPE, o.message)
            out.append(o.message)
    return out


def timed_out(messages: list[Any]) -> set[str]:
    """Runs with a step failed for its wait in the queue (a verdict on its own, or inside
    the run's end)."""
    verdicts = [v for m in messages for v in (m.steps if isinstance(m, RunFinished) else [m])]
    return {
        v.run_id
        for v in verdicts
        if isinstance(v, StepFinished) and v.status is RunStatus.FAILED and TIMEOUT in v.error
    }


def retried(messages: list[Any]) -> set[tuple[str, str, int]]:
    return {(m.run_id, m.step, m.attempt) for m in messages if isinstance(m, Task)}


def fail(run_id: str, name: str, attempt: int, **kw: Any) -> StepResult:
    return StepResult(run_id, name, attempt, 1, "w1", ok=False, error="boom", **kw)


def hand_back(run_id: str, delivery: int, now: dt.datetime) -> StepResult:
    return StepResult(
        run_id, "a", 1, delivery, "w1", ok=False, handed_back=True, finished_at=iso(now)
    )


def test_many_queued_runs_time_out_each_at_its_moment_and_not_before() -> None:
    state = registered(ONE)
    n = 2000
    for i in range(n):  # run i queued at i ms: it times out at 30 s + i ms
        feed(state, RunRequested(f"r{i}", "one", {}), at(ms=i))
    assert tick(state, at(30, us=-1)) == []
    assert timed_out(tick(state, at(30))) == {"r0"}
    assert tick(state, at(30, us=999)) == []
    assert timed_out(tick(state, at(30, ms=1))) == {"r1"}
    assert timed_out(tick(state, at(30, ms=500))) == {f"r{i}" for i in range(2, 501)}
    assert tick(state, at(30, ms=500, us=999)) == []
    assert len(state.runs) == n - 501
    assert timed_out(tick(state, at(60))) == {f"r{i}" for i in range(501, n)}
    assert not state.runs
    assert tick(state, at(3600)) == [] and state.deadlines == []


def test_many_retries_are_queued_each_when_due_and_then_time_out_from_then() -> None:
    state = registered(ONE)
    n = 500
    for i in range(n):  # run i fails at i ms: attempt 2 is due at 10 s + i ms
        feed(state, RunRequested(f"r{i}", "one", {}), at(ms=i))
        feed(state, StepAssigned(f"r{i}", "a", 1, 1, "w1", "w"), at(ms=i))
        feed(state, fail(f"r{i}", "a", 1), at(ms=i))
    assert tick(state, at(10, us=-1)) == []
    assert retried(tick(state, at(10))) == {("r0", "a", 2)}
    assert retried(tick(state, at(10, ms=n - 1))) == {(f"r{i}", "a", 2) for i in range(1, n)}
    # Each retry waits from when it was queued: r0 at 10 s, the others at 10.499 s.
    assert tick(state, at(40, us=-1)) == []
    assert timed_out(tick(state, at(40))) == {"r0"}
    assert tick(state, at(40, ms=n - 1, us=-1)) == []
    assert timed_out(tick(state, at(40, ms=n - 1))) == {f"r{i}" for i in range(1, n)}
    assert not state.runs
    assert tick(state, at(40, ms=n - 1)) == [] and state.deadlines == []


def test_stale_entries_decide_nothing_and_are_dropped() -> None:
    state = registered(ONE, TWO)
    for run_id in ("assigned", "succeeded", "cancelled", "handed"):
        feed(state, RunRequested(run_id, "one", {}), T0)
    feed(state, StepAssigned("assigned", "a", 1, 1, "w1", "w"), at(1))
    feed(state, StepAssigned("succeeded", "a", 1, 1, "w1", "w"), at(1))
    feed(state, StepResult("succeeded", "a", 1, 1, "w1", ok=True, output={}), at(2))
    feed(state, RunCancelRequested("cancelled"), at(2))
    # Handed back at 3 s, then taken again at 4 s: both of its deadlines are stale.
    feed(state, StepAssigned("handed", "a", 1, 1, "w1", "w"), at(1))
    feed(state, hand_back("handed", 1, at(3)), at(3))
    feed(state, StepAssigned("handed", "a", 1, 2, "w2", "w"), at(4))
    # A run failing (b failed: its cleanup runs) with a retry of a scheduled: never queued.
    feed(state, RunRequested("failing", "two", {}), T0)
    feed(state, StepAssigned("failing", "a", 1, 1, "w1", "w"), at(1))
    feed(state, fail("failing", "a", 1), at(1))  # a: attempt 2 due at 3 s
    feed(state, StepAssigned("failing", "b", 1, 1, "w1", "w"), at(1))
    out = feed(state, fail("failing", "b", 1, non_retryable=True), at(2))
    assert retried(out) == {("failing", "cleanup", 1)}
    feed(state, StepAssigned("failing", "cleanup", 1, 1, "w1", "w"), at(2))

    assert len(state.deadlines) >= 6  # one at least for each step that waited
    assert tick(state, at(3600)) == []
    assert state.deadlines == []  # nothing in flight waits for anything: every entry popped
    assert set(state.runs) == {"assigned", "handed", "failing"}


def test_a_hand_back_rearms_the_schedule_timeout() -> None:
    state = registered(ONE)
    feed(state, RunRequested("r1", "one", {}), T0)
    feed(state, StepAssigned("r1", "a", 1, 1, "w1", "w"), at(1))
    feed(state, hand_back("r1", 1, at(20)), at(20))
    assert tick(state, at(30)) == []  # the first wait's deadline: stale
    assert tick(state, at(50, us=-1)) == []
    assert timed_out(tick(state, at(50))) == {"r1"}


def test_one_decision_per_run_per_call_the_next_one_on_the_next_call() -> None:
    state = registered(TWO)
    feed(state, RunRequested("r1", "two", {}), T0)
    feed(state, StepAssigned("r1", "a", 1, 1, "w1", "w"), T0)
    feed(state, fail("r1", "a", 1), T0)  # a: attempt 2 due at 2 s; b times out at 5 s
    first = tick(state, at(6))  # both due: a comes first among the run's steps
    assert retried(first) == {("r1", "a", 2)} and not timed_out(first)
    second = tick(state, at(6))
    assert timed_out(second) == {"r1"}
    assert [m.step for m in second if isinstance(m, Task)] == ["cleanup"]


def test_a_state_loaded_from_a_snapshot_decides_the_same_as_it_goes_on() -> None:
    """A mix of runs waiting, retried, taken, handed back and over; the live state and the
    one loaded from its snapshot tick side by side, each folding its own decisions."""
    live = registered(ONE, TWO)
    for i in range(300):
        run_id, now = f"r{i}", at(ms=37 * i)
        feed(live, RunRequested(run_id, ("one", "two")[i % 2], {}), now)
        if i % 3 == 0:
            feed(live, StepAssigned(run_id, "a", 1, 1, "w1", "w"), now)
        if i % 5 == 0:
            feed(live, fail(run_id, "a", 1), now)
        if i % 7 == 0:
            later = now + dt.timedelta(seconds=1)
            feed(live, hand_back(run_id, 1, later), later)
        if i % 11 == 0:
            feed(live, RunCancelRequested(run_id), now)
    restored = load(dump(Snapshot(0, live))).state
    assert restored == live
    assert_indexed(restored)
    for k in range(1, 320):
        now = at(k * 0.25)
        assert tick(live, now, snapshot=False) == tick(restored, now, snapshot=False)
        assert restored == live
    # Left in flight: steps held by workers, with no deadline.
    assert live.runs and all(
        s.assigned or s.status is None for r in live.runs.values() for s in r.steps.values()
    )
    assert tick(live, at(80)) == tick(restored, at(80)) == []
    assert live.deadlines == restored.deadlines == []


def test_odd_timeouts_fire_exactly_when_the_scan_would() -> None:
    """Timeouts that are not whole microseconds: ``due`` agrees with the scan on every
    microsecond around the deadline (``checked_due`` compares them)."""
    for timeout in (1.0000005, 0.1 + 0.2, 2.5e-6, 299.9999995, 1e-7):
        wf = WorkflowDef(
            name="odd", version="v1", steps=(StepDef("a"),), schedule_timeout_s=timeout
        )
        state = registered(wf)
        queued = at(us=7)
        feed(state, RunRequested("r1", "odd", {}), queued)
        nominal = queued + dt.timedelta(seconds=timeout)
        decided = [tick(state, nominal + dt.timedelta(microseconds=d)) for d in range(-2, 3)]
        assert sum(1 for d in decided if d) == 1, (timeout, decided)


def test_stale_entries_do_not_pile_up() -> None:
    """Runs over long before their (day-long) schedule timeouts: the heap is rebuilt from
    the runs in flight before it grows far past them."""
    wf = WorkflowDef(name="slow", version="v1", steps=(StepDef("a"),), schedule_timeout_s=86400)
    state = registered(wf)
    for i in range(10_000):
        feed(state, RunRequested(f"r{i}", "slow", {}), at(ms=i))
        if i >= 10:  # ten runs stay in flight, waiting
            out = feed(state, StepResult(f"r{i}", "a", 1, 1, "w1", ok=True, output={}), at(ms=i))
            assert isinstance(out[-1], RunFinished)
    assert len(state.runs) == 10
    assert len(state.deadlines) <= state.deadlines_cap < 1100
    assert_indexed(state)
    assert timed_out(tick(state, at(86400, ms=9))) == {f"r{i}" for i in range(10)}
