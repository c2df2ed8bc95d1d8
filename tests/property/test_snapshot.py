"""A snapshot is the state, exactly; and a snapshot of any prefix of the log (or of more
than a prefix), plus the fold of the rest, is the state the whole log folds to
(``dispatcher.snapshot``'s argument, on random histories)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import State, fold
from dispatcher.snapshot import Snapshot, dump, load
from schemas import RunFinished, RunRejected, WorkflowDef, parse
from tests.property.harness import Logged, rebuild
from tests.property.strategies import Action, Outcome, drain_outcomes, scripts, workflows
from tests.property.test_fold import simulated

PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fold_onto(state: State, log: list[Logged]) -> State:
    for entry in log:
        fold(state, parse(entry.subject).scope, entry.message, entry.seq)
    return state


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_a_snapshot_loads_as_the_state_it_was(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
    sim, _log = simulated(data, wf, script, answers)
    seq = data.draw(st.integers(0, 10**9), label="seq")
    snap = load(dump(Snapshot(seq, sim.state, forgot_through=seq // 2)))
    assert snap == Snapshot(seq, sim.state, forgot_through=seq // 2)
    assert snap.state == sim.state


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_a_snapshot_of_a_prefix_plus_the_rest_is_the_whole_log(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
    """State that folded the log up to ``seen``, snapshot as covering ``cut <= seen`` (the
    ack floor lags what the dispatcher folded), loaded, then the log from ``cut + 1``
    folded: the full rebuild."""
    _sim, log = simulated(data, wf, script, answers)
    cut = data.draw(st.integers(0, len(log)), label="cut")
    seen = data.draw(st.integers(cut, len(log)), label="seen")
    taken = rebuild(log[:seen])
    restored = load(dump(Snapshot(cut, taken))).state
    assert fold_onto(restored, log[cut:]) == rebuild(log)


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_forgetting_runs_that_ended_before_the_cut_loses_nothing_else(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
    """Runs whose end is at or below the cut are dropped from ``done``: the rest of the log
    (late results and assignments of those runs included) brings none of them back in
    flight, and every other part of the state is the full rebuild's."""
    _sim, log = simulated(data, wf, script, answers)
    cut = data.draw(st.integers(0, len(log)), label="cut")
    ended = {
        e.message.run_id for e in log[:cut] if isinstance(e.message, RunFinished | RunRejected)
    }
    taken = rebuild(log[:cut])
    taken.done -= ended
    restored = fold_onto(load(dump(Snapshot(cut, taken, cut))).state, log[cut:])
    full = rebuild(log)
    assert restored.runs == full.runs
    assert restored.workflows == full.workflows
    assert restored.done <= full.done
    assert full.done - restored.done <= ended
