"""Flow control's holds (``dispatcher.holds``) under arbitrary runs, results, waits, crashes
and restarts: a gate that keeps some steps' tasks back until a time. No task is lost (every
run still ends), none is appended twice (``History`` checks every dedup id and that each
task follows its step's rules), a held step's task goes with the dedup id it was decided
with, and a crash between any two appends recovers exactly what was lost, held tasks made
again from the log's ``held`` records."""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import State, complete, step
from dispatcher.holds import Go, Hold, Verdict
from dispatcher.state import RunState, StepState
from schemas import Task, WorkflowDef
from schemas.holds import HoldKind, StepHeld
from tests.property.harness import MAX_BYTES, T0, Sim, rebuild
from tests.property.history import SCOPE
from tests.property.strategies import (
    NAMES,
    ON_FAILURE,
    Action,
    Outcome,
    drain_outcomes,
    scripts,
    workflows,
)

dstep = importlib.import_module("dispatcher.step")
PURE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Curfew:
    """Holds the tasks of ``steps`` until ``T0 + open_s`` (to be looked at again then);
    ``second`` holds them for another kind too, a little longer."""

    steps: frozenset[str]
    open_s: float
    second: bool

    def __call__(
        self, state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
    ) -> Verdict:
        opens = T0 + dt.timedelta(seconds=self.open_s)
        if task.step in self.steps and now < opens:
            return Hold(HoldKind.PRIORITY, f"closed until {opens}", opens)
        later = opens + dt.timedelta(seconds=1)
        if self.second and task.step in self.steps and now < later:
            return Hold(HoldKind.LABELS, f"closed until {later}", later)
        return Go()


curfews = st.builds(
    Curfew,
    st.frozensets(st.sampled_from([*NAMES, ON_FAILURE]), min_size=1),
    st.sampled_from([0.5, 3.0, 40.0, 400.0]),
    st.booleans(),
)


@contextmanager
def gated(gate: Curfew) -> Iterator[None]:
    saved = dstep.GATES
    dstep.GATES = (gate, *saved)  # before the engine's own (rate limits)
    try:
        yield
    finally:
        dstep.GATES = saved


@PURE
@given(curfews, workflows(), scripts, drain_outcomes)
def test_held_tasks_are_never_lost_nor_offered_twice(
    gate: Curfew, wf: WorkflowDef, script: list[Action], answers: list[Outcome]
) -> None:
    with gated(gate):
        sim = Sim(wf)
        for action in script:
            sim.act(action)
        sim.drain(answers)
        assert not sim.state.runs and not sim.state.holds.tasks
        curfewed = {e.message.step for e in sim.log if isinstance(e.message, StepHeld)
                    and e.message.kind in (HoldKind.PRIORITY, HoldKind.LABELS)}  # fmt: skip
        assert curfewed <= gate.steps
        assert rebuild(sim.log) == sim.state


@PURE
@given(curfews, workflows(), scripts, drain_outcomes, st.data())
def test_a_crash_between_any_two_appends_recovers_held_tasks(
    gate: Curfew,
    wf: WorkflowDef,
    script: list[Action],
    answers: list[Outcome],
    data: st.DataObject,
) -> None:
    with gated(gate):
        sim = Sim(wf)
        for action in script:
            sim.act(action)
        sim.drain(answers)
        cut_short = [d for d in sim.decisions if d.cause is not None and len(d.outputs) > 1]
        if not cut_short:
            return
        decision = data.draw(st.sampled_from(cut_short), label="decision")
        stored = data.draw(st.integers(1, len(decision.outputs) - 1), label="stored")
        in_log = sim.log[: decision.start + stored]
        ids = {o.msg_id for d in sim.decisions if d.start < decision.start for o in d.outputs}
        ids |= {o.msg_id for o in decision.outputs[:stored]}

        state = rebuild(in_log)  # the restart
        appended = []
        for unfinished in complete(state, decision.now):
            appended += dstep.settle(state, None, None, unfinished, MAX_BYTES, decision.now)
        appended += step(state, SCOPE, decision.cause, decision.now, MAX_BYTES)  # redelivered
        new = [o.msg_id for o in appended if o.msg_id not in ids]
        assert len(set(new)) == len(new), "recovery appended a message twice"
        # Held tasks made again are offered only if their gate lets them now: those the
        # live dispatcher held then (and offered later) may be held again, not lost.
        missing = {o.msg_id for o in decision.outputs[stored:]}
        assert set(new) <= missing, "recovery appended other messages than were lost"
        for gone in missing - set(new):
            run_id, name = gone.split(":")[:2]
            assert (run_id, name) in state.holds.tasks, f"{gone} lost, not held"
