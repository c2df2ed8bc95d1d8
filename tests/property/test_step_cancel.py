"""A step key's ``CANCEL_*`` strategies cancel exactly the runs the strategy names (issue
15; ``dispatcher.flowgates``), for arbitrary arrivals, completions, late results of
cancelled runs, and crashes (the log cut anywhere in the last decision, the state rebuilt,
``complete`` and the input's redelivery deciding the rest), driven through the pure
dispatcher as the service drives it:

- a key never has more than ``max_runs`` runs with its step in flight (offered, result
  not in, run not over) when a task of it is offered;
- the runs cancelled are exactly those a reference model names: per key, the tasks in
  flight plus the one coming in, ranked by their runs' age; more than ``max_runs`` of them
  cancels the oldest (``CANCEL_IN_PROGRESS``) or the newest (``CANCEL_NEWEST``), each with
  the strategy's reason naming the step and the key;
- a cancelled run's later steps are never offered; every other run ends SUCCEEDED;
- after a crash, what the dispatcher decides again is exactly what the log lost: same
  messages, same dedup ids, nothing cancelled twice or otherwise.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dispatcher import Output, State, fold
from dispatcher.decide import complete
from dispatcher.step import settle, step
from schemas import (
    RunFinished,
    RunRequested,
    RunStatus,
    StepDef,
    StepResult,
    Task,
    WorkflowDef,
    parse,
)
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from tests.property.history import SCOPE

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024
KEYS = ("u0", "u1")
STRATEGIES = (LimitStrategy.CANCEL_IN_PROGRESS, LimitStrategy.CANCEL_NEWEST)


@attrs.frozen
class New:
    key: int


@attrs.frozen
class Done:
    pick: int  # a task out with the workers, or a cancelled run's (a late result)


@attrs.frozen
class Crash:
    cut: int  # how much of the last decision the log kept


ACTIONS = st.one_of(
    st.builds(New, st.integers(0, len(KEYS) - 1)),
    st.builds(New, st.integers(0, len(KEYS) - 1)),
    st.builds(New, st.just(0)),
    st.builds(Done, st.integers(0, 50)),
    st.builds(Done, st.integers(0, 50)),
    st.builds(Crash, st.integers(0, 8)),
)


def workflow(strategy: LimitStrategy, max_runs: int, first: bool) -> WorkflowDef:
    """``x`` keyed (first, or after ``a``: its tasks then come in any order), ``y`` after."""
    keyed = StepDef(
        "x", () if first else ("a",), concurrency=ConcurrencyDef("input.user", max_runs, strategy)
    )
    steps = (*(() if first else (StepDef("a"),)), keyed, StepDef("y", ("x",)))
    return WorkflowDef(name="Cancel", version="v1", steps=steps)


class Model:
    """The strategy, told plainly: per key, the runs with ``x`` in flight."""

    def __init__(self, strategy: LimitStrategy, max_runs: int) -> None:
        self.strategy, self.max_runs = strategy, max_runs
        self.in_flight: dict[str, set[int]] = {}
        self.cancelled: set[int] = set()

    def arrive(self, key: str, run: int) -> None:
        ranked = sorted(self.in_flight.get(key, set()) | {run})  # run numbers: oldest first
        over = len(ranked) - self.max_runs
        losers = set()
        if over > 0:
            oldest = self.strategy is LimitStrategy.CANCEL_IN_PROGRESS
            losers = set(ranked[:over] if oldest else ranked[-over:])
        self.cancelled |= losers
        self.in_flight[key] = set(ranked) - losers

    def done(self, key: str, run: int) -> None:
        self.in_flight.get(key, set()).discard(run)


class Sim:
    def __init__(self, wf: WorkflowDef) -> None:
        spec = wf.step("x").concurrency
        assert spec is not None
        self.wf, self.spec, self.first = wf, spec, not wf.step("x").parents
        self.model = Model(spec.limit_strategy, spec.max_runs)
        self.now = T0
        self.log: list[Output] = [Output(SCOPE.workflow(wf.name), wf, "wf")]
        # The last input, where its decision starts in the log, and when it was decided.
        self.last: tuple[Any, int, dt.datetime] | None = None
        self.state = State()
        fold(self.state, SCOPE, wf)
        self.out: dict[tuple[str, str], Task] = {}  # offered, no result yet, run not over
        self.late: list[Task] = []  # tasks of runs since cancelled
        self.ended: dict[str, RunFinished] = {}
        self.ids: set[str] = {"wf"}
        self.key_of: dict[str, str] = {}
        self.runs = 0

    def record(self, outputs: list[Output]) -> None:
        for o in outputs:
            assert o.msg_id not in self.ids, f"{o.msg_id} appended twice"
            self.ids.add(o.msg_id)
            self.log.append(o)
            m = o.message
            if isinstance(m, RunFinished):
                self.ended[m.run_id] = m
                for ref in [r for r in self.out if r[0] == m.run_id]:
                    self.late.append(self.out.pop(ref))
            elif isinstance(m, StepResult):  # an input: its task is answered
                self.out.pop((m.run_id, m.step), None)
                self.late = [t for t in self.late if (t.run_id, t.step) != (m.run_id, m.step)]
            elif isinstance(m, Task):
                assert m.run_id not in self.ended, f"{m!r} of a run over"
                self.out[(m.run_id, m.step)] = m
                if m.step == "x":
                    key = self.key_of[m.run_id]
                    busy = [r for (r, s) in self.out if s == "x" and self.key_of[r] == key]
                    assert len(busy) <= self.spec.max_runs, (key, busy)

    def feed(self, message: Any) -> None:
        subject = SCOPE.run(message.run_id, message.KIND)
        self.log.append(Output(subject, message, f"in:{len(self.log)}"))
        self.last = (message, len(self.log), self.now)
        self.record(step(self.state, SCOPE, message, self.now, MAX_BYTES))

    def act(self, action: Any) -> None:
        self.now += dt.timedelta(milliseconds=10)
        match action:
            case New(key=k):
                run_id = f"r{self.runs}"
                self.runs += 1
                self.key_of[run_id] = KEYS[k]
                self.feed(RunRequested(run_id, self.wf.name, {"user": KEYS[k]}))
                if self.first:
                    self.model.arrive(KEYS[k], int(run_id[1:]))
            case Done(pick=pick):
                tasks = sorted(self.out) + [(t.run_id, t.step) for t in self.late]
                if tasks:
                    self.finish(tasks[pick % len(tasks)])
            case Crash(cut=cut):
                self.crash(cut)

    def finish(self, ref: tuple[str, str]) -> None:
        task = self.out.pop(ref, None)
        if task is None:  # a cancelled run's task: its worker answers late
            event("a cancelled run's late result")
            task = next(t for t in self.late if (t.run_id, t.step) == ref)
            self.late.remove(task)
        over = task.run_id in self.ended
        self.feed(StepResult(task.run_id, task.step, task.attempt, 1, "w", ok=True, output=1))
        run, key = int(task.run_id[1:]), self.key_of[task.run_id]
        if task.step == "a" and not over:
            self.model.arrive(key, run)
        elif task.step == "x":
            self.model.done(key, run)

    def crash(self, cut: int) -> None:
        """The log keeps ``cut`` outputs of the last decision; the state is rebuilt from it;
        ``complete`` and the input redelivered must decide exactly what was lost."""
        if self.last is None:
            return
        message, start, self.now = self.last  # decided again at once, as it was decided
        lost = self.log[start + cut :]
        del self.log[start + cut :]
        for o in lost:
            self.ids.discard(o.msg_id)
        # What the sim saw of the lost outputs is undone by replaying what it kept.
        kept = self.log[:]
        self.out, self.late, self.ended, self.ids = {}, [], {}, set()
        self.log = []
        self.record(kept)
        self.log = kept
        state = State()
        for o in kept:
            fold(state, parse(o.subject).scope, o.message)
        self.state = state
        again = [
            o
            for d in complete(state, self.now)
            for o in settle(state, None, None, d, MAX_BYTES, self.now)
        ]
        again += step(state, SCOPE, message, self.now, MAX_BYTES)
        again += settle(state, None, None, [], MAX_BYTES, self.now)
        assert [(o.msg_id, o.message) for o in again] == [(o.msg_id, o.message) for o in lost]
        self.record(again)
        self.last = None

    def drain(self) -> None:
        for _ in range(10 * (self.runs + 1)):
            if not self.state.runs:
                return
            assert self.out, f"runs left with nothing out: {sorted(self.state.runs)}"
            self.now += dt.timedelta(milliseconds=10)
            self.finish(sorted(self.out)[0])
        raise AssertionError(f"runs left: {sorted(self.state.runs)}")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(STRATEGIES),
    max_runs=st.integers(1, 2),
    first=st.booleans(),
    actions=st.lists(ACTIONS, min_size=2, max_size=40),
)
def test_a_step_keys_cancel_strategy_cancels_exactly_the_runs_it_names(
    strategy: LimitStrategy, max_runs: int, first: bool, actions: list[Any]
) -> None:
    sim = Sim(workflow(strategy, max_runs, first))
    for action in actions:
        sim.act(action)
    sim.drain()
    assert len(sim.ended) == sim.runs
    cancelled = {r for r, m in sim.ended.items() if m.status is RunStatus.CANCELLED}
    assert cancelled == {f"r{n}" for n in sim.model.cancelled}
    event("runs cancelled" if cancelled else "none cancelled")
    event("crashed" if any(isinstance(a, Crash) for a in actions) else "no crash")
    for run_id in cancelled:
        error = sim.ended[run_id].error or ""
        key = sim.key_of[run_id]
        assert f"step 'x' concurrency key {key!r}" in error, error
        tag = (
            "took its place" if strategy is LimitStrategy.CANCEL_IN_PROGRESS else "(CANCEL_NEWEST)"
        )
        assert tag in error, error
    offered_y = {
        o.message.run_id for o in sim.log if isinstance(o.message, Task) and o.message.step == "y"
    }
    assert not offered_y & cancelled, "a cancelled run's downstream step was offered"
    assert all(m.status is RunStatus.SUCCEEDED for r, m in sim.ended.items() if r not in cancelled)
