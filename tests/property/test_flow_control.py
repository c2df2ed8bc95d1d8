"""Priority and step-level concurrency, over arbitrary arrivals, completions, capacity
changes and restarts (issue 15; ``dispatcher.flowgates``), driven through the pure
dispatcher as the service drives it (``dispatcher.step``, ``decide.complete``):

- a step's key never has more than ``max_runs`` of it in flight (offered, result not in);
- each key's held tasks are offered oldest first (same priority), and a key with room and
  a task held is never passed over while another key's later task goes;
- among a workflow's tasks held for priority, a lower-priority one is never offered while
  a higher-priority one stays held;
- prioritized tasks out with workers never exceed the capacity when offered;
- held tasks survive a restart (the log rebuilt, ``complete`` makes them again): once
  workers answer everything, every run ends SUCCEEDED.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import Output, State, fold
from dispatcher.decide import complete
from dispatcher.step import settle, step
from schemas import RunRequested, RunStatus, StepDef, StepResult, Task, WorkflowDef, parse
from schemas.concurrency import ConcurrencyDef
from schemas.holds import StepHeld
from tests.property.history import SCOPE

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MAX_BYTES = 1024 * 1024 - 1024
KEYS = ("u0", "u1", "u2")


@attrs.frozen
class New:
    key: int
    priority: int | None


@attrs.frozen
class Done:
    pick: int


@attrs.frozen
class Capacity:
    slots: int


@attrs.frozen
class Restart:
    pass


ACTIONS = st.one_of(
    st.builds(New, st.integers(0, 2), st.sampled_from([None, 1, 2, 3])),
    st.builds(Done, st.integers(0, 50)),
    st.builds(Capacity, st.integers(0, 4)),
    st.just(Restart()),
)


def workflow(max_runs: int, default_priority: int | None) -> WorkflowDef:
    keyed = StepDef("b", ("a",), concurrency=ConcurrencyDef("input.user", max_runs))
    return WorkflowDef(
        name="Flow",
        version="v1",
        steps=(StepDef("a"), keyed),
        default_priority=default_priority,
    )


class FlowSim:
    def __init__(self, wf: WorkflowDef, slots: int) -> None:
        self.wf = wf
        self.slots = slots
        self.now = T0
        self.log: list[tuple[str, Any]] = []
        self.state = self._fresh()
        self.out: dict[tuple[str, str], Task] = {}  # offered, no result yet
        self.held: dict[tuple[str, str], int] = {}  # (run, step) -> order first held
        self.counter = itertools.count()
        self.runs = 0
        self.key_of: dict[str, str] = {}
        self.priority_of: dict[str, int | None] = {}
        self._record([Output(SCOPE.workflow(wf.name), wf, "wf")], None)
        fold(self.state, SCOPE, wf)

    def _fresh(self) -> State:
        state = State()
        state.capacity = lambda scope, workflow, now: self.slots
        return state

    def _record(self, outputs: list[Output], cause: Any) -> None:
        for o in outputs:
            self.log.append((o.subject, o.message))
            self._check(o)

    def _check(self, o: Output) -> None:
        msg = o.message
        if isinstance(msg, StepHeld) and (msg.run_id, msg.step) not in self.held:
            self.held[(msg.run_id, msg.step)] = next(self.counter)
        if not isinstance(msg, Task):
            return
        ref = (msg.run_id, msg.step)
        self.out[ref] = msg
        mine = self.held.pop(ref, None)  # None: offered as soon as it was ready
        # a key's step in flight never over max_runs
        if msg.step == "b":
            spec = self.wf.step("b").concurrency
            assert spec is not None
            key = self.key_of[msg.run_id]
            busy = [r for (r, s) in self.out if s == "b" and self.key_of[r] == key]
            assert len(busy) <= spec.max_runs, (key, busy)
            # the key's tasks held before it, of its priority or higher, went first
            mine_p = self.priority_of[msg.run_id] or 1
            older = [
                r
                for (r, s), order in self.held.items()
                if s == "b"
                and self.key_of[r] == key
                and (mine is None or order < mine)
                and (self.priority_of[r] or 1) >= mine_p
            ]
            assert not older, f"{msg.run_id} of key {key} went before {older}"
        # never a lower priority offered while a higher one is held for priority
        if msg.priority is not None:
            higher = [
                (r, s)
                for (r, s) in self.held
                if (self.priority_of[r] or 1) > msg.priority and self._held_for_priority(r, s)
            ]
            assert not higher, f"{ref} (priority {msg.priority}) went before {higher}"
            out = [r for r in self.out if self.priority_of[r[0]] is not None]
            assert len(out) <= max(self.slots, 0) or not self._capacity_known(), (out, self.slots)

    def _capacity_known(self) -> bool:
        return self.state.capacity is not None

    def _held_for_priority(self, run_id: str, name: str) -> bool:
        run = self.state.runs.get(run_id)
        step_state = None if run is None else run.steps.get(name)
        held = self.state.holds.tasks.get((run_id, name))
        return (
            step_state is not None
            and bool(step_state.held)
            and held is not None
            and held.kind.value == "PRIORITY"
        )

    def feed(self, message: Any) -> None:
        subject = SCOPE.run(message.run_id, message.KIND)
        self.log.append((subject, message))
        outputs = step(self.state, SCOPE, message, self.now, MAX_BYTES)
        self._record(outputs, message)

    def act(self, action: Any) -> None:
        self.now += dt.timedelta(milliseconds=10)
        match action:
            case New(key=k, priority=p):
                run_id = f"r{self.runs}"
                self.runs += 1
                self.key_of[run_id] = KEYS[k]
                self.priority_of[run_id] = p if p is not None else self.wf.default_priority
                self.feed(RunRequested(run_id, self.wf.name, {"user": KEYS[k]}, priority=p))
            case Done(pick=pick):
                if self.out:
                    refs = sorted(self.out)
                    self.finish(refs[pick % len(refs)])
            case Capacity(slots=slots):
                self.slots = slots
                self.state.holds.dirty = True  # the service does so when a beat changes it
                self._record(settle(self.state, None, None, [], MAX_BYTES, self.now), None)
            case Restart():
                self.restart()

    def finish(self, ref: tuple[str, str]) -> None:
        task = self.out.pop(ref)
        result = StepResult(task.run_id, task.step, task.attempt, 1, "w", ok=True, output=1)
        self.feed(result)

    def restart(self) -> None:
        state = self._fresh()
        for subject, message in self.log:
            fold(state, parse(subject).scope, message)
        self.state = state
        # The line is in memory: ``complete`` makes the held tasks again in the order of
        # their runs' creation, and that is their order in line from now on.
        again = sorted(self.held, key=lambda ref: (int(ref[0][1:]), ref[1]))
        self.held = {ref: next(self.counter) for ref in again}
        for decision in complete(state, self.now):
            self._record(settle(state, None, None, decision, MAX_BYTES, self.now), None)
        self._record(settle(state, None, None, [], MAX_BYTES, self.now), None)

    def drain(self) -> None:
        self.slots = max(self.slots, 1)
        self.state.holds.dirty = True
        self._record(settle(self.state, None, None, [], MAX_BYTES, self.now), None)
        for _ in range(20 * (self.runs + 1)):
            if not self.state.runs:
                return
            if self.out:
                self.finish(sorted(self.out)[0])
            else:
                self.now += dt.timedelta(milliseconds=10)
                self.state.holds.dirty = True
                self._record(settle(self.state, None, None, [], MAX_BYTES, self.now), None)
        raise AssertionError(f"runs left: {sorted(self.state.runs)}; held {self.held}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_runs=st.integers(1, 2),
    default_priority=st.sampled_from([None, 1, 2]),
    slots=st.integers(0, 3),
    actions=st.lists(ACTIONS, max_size=40),
)
def test_flow_control_over_arbitrary_arrivals_completions_and_restarts(
    max_runs: int, default_priority: int | None, slots: int, actions: list[Any]
) -> None:
    sim = FlowSim(workflow(max_runs, default_priority), slots)
    for action in actions:
        sim.act(action)
    sim.drain()
    ended = [m for _s, m in sim.log if type(m).__name__ == "RunFinished"]
    assert len(ended) == sim.runs
    assert all(m.status is RunStatus.SUCCEEDED for m in ended)
