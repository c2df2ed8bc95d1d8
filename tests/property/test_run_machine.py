"""The run state machine: any interleaving of requests, results (stale, duplicated,
redelivered, handed back), assignments, cancels and time keeps every invariant of
:class:`tests.property.history.History`, and every run then finishes in bounded steps."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from schemas import RunStatus, WorkflowDef
from tests.property.harness import DRAIN_LIMIT, Sim
from tests.property.strategies import (
    SECONDS,
    Action,
    Again,
    Assign,
    Cancel,
    Outcome,
    Reject,
    Request,
    Restart,
    Result,
    Trigger,
    Wait,
    drain_outcomes,
    outcomes,
    picks,
    scripts,
    workflows,
)

PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_script(wf: WorkflowDef, script: list[Action], answers: list[Outcome]) -> Sim:
    sim = Sim(wf)
    for action in script:
        sim.act(action)
    assert sim.drain(answers) <= DRAIN_LIMIT
    return sim


def assert_all_over(sim: Sim) -> None:
    """Every run created is over, every one of its steps has a terminal verdict, and the
    state rebuilt from the log is the live one."""
    history = sim.history
    assert set(history.finished) == set(history.created)
    for run_id, created in history.created.items():
        names = [s.name for s in created.steps]
        names += [created.on_failure.name] if created.on_failure else []
        for name in names:
            assert history.verdicts[(run_id, name)].status.terminal
    assert not sim.state.runs
    sim.restart()


@PURE
@given(workflows(), scripts, drain_outcomes)
def test_any_interleaving_keeps_the_invariants_and_terminates(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome]
) -> None:
    assert_all_over(run_script(wf, script, answers))


@PURE
@given(workflows(), drain_outcomes)
def test_a_run_left_alone_times_out_or_finishes(wf: WorkflowDef, answers: list[Outcome]) -> None:
    """Nothing but time and answers: the run ends, and SUCCEEDED only if every answer for
    its DAG was ok."""
    sim = run_script(wf, [Request(0)], answers)
    assert_all_over(sim)
    if Outcome.OK not in answers:
        assert sim.history.finished["r0"].status is RunStatus.FAILED


class RunMachine(RuleBasedStateMachine):
    """The same world as rules: hypothesis picks the next input from what is possible."""

    sim: Sim

    @initialize(wf=workflows())
    def register(self, wf: WorkflowDef) -> None:
        self.sim = Sim(wf)

    @rule(run=st.integers(0, 1))
    def request(self, run: int) -> None:
        self.sim.act(Request(run))

    @rule(run=st.integers(0, 1))
    def request_unknown_workflow(self, run: int) -> None:
        self.sim.act(Reject(run))

    @rule()
    def event(self) -> None:
        self.sim.act(Trigger())

    @precondition(lambda self: self.sim.history.queued_order)
    @rule(pick=picks, late=st.booleans())
    def worker_takes_a_task(self, pick: int, late: bool) -> None:
        self.sim.act(Assign(pick, late))

    @precondition(lambda self: self.sim.history.queued_order)
    @rule(pick=picks, outcome=outcomes, fast=st.booleans())
    def worker_reports(self, pick: int, outcome: Outcome, fast: bool) -> None:
        self.sim.act(Result(pick, outcome, fast=fast))

    @precondition(lambda self: self.sim.history.queued_order)
    @rule(pick=picks, outcome=outcomes, stale=st.integers(0, 2), zombie=st.booleans())
    def late_or_stale_report(self, pick: int, outcome: Outcome, stale: int, zombie: bool) -> None:
        self.sim.act(Result(pick, outcome, late=True, stale=stale, zombie=zombie))

    @precondition(lambda self: self.sim.history.created)
    @rule(pick=picks)
    def cancel(self, pick: int) -> None:
        self.sim.act(Cancel(pick))

    @rule(seconds=st.sampled_from(SECONDS))
    def time_passes(self, seconds: float) -> None:
        self.sim.act(Wait(seconds))

    @rule(pick=picks)
    def input_redelivered(self, pick: int) -> None:
        self.sim.act(Again(pick))

    @rule()
    def dispatcher_restarts(self) -> None:
        self.sim.act(Restart())

    @invariant()
    def rebuilt_state_is_the_live_state(self) -> None:
        self.sim.restart()

    def teardown(self) -> None:
        if hasattr(self, "sim"):
            self.sim.drain([Outcome.ERROR, Outcome.OK, Outcome.TIMEOUT])
            assert_all_over(self.sim)


TestRunMachine = RunMachine.TestCase
TestRunMachine.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
