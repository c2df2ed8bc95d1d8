"""Folding is idempotent and order-robust: the dispatcher rebuilt from a log that holds
duplicates, or that it reads twice, or in which workers' messages landed before decisions
the dispatcher made without having seen them, is the dispatcher that lived through it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import StepAssigned, Task, WorkflowDef
from tests.property.harness import Logged, Sim, rebuild
from tests.property.strategies import Action, Outcome, drain_outcomes, scripts, workflows

PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def simulated(
    data: st.DataObject, wf: WorkflowDef, script: list[Action], answers: list[Outcome]
) -> tuple[Sim, list[Logged]]:
    """A log, cut anywhere: runs in flight as well as runs over."""
    sim = Sim(wf)
    for action in script:
        sim.act(action)
    if data.draw(st.booleans(), label="drain"):
        sim.drain(answers)
    cut = data.draw(st.integers(1, len(sim.log)), label="cut")
    return sim, sim.log[:cut]


def with_duplicates(log: list[Logged], copies: list[tuple[int, int]]) -> list[Logged]:
    """``log`` with a copy of entry ``i`` inserted before entry ``j`` (at least after i)."""
    before: list[list[Logged]] = [[] for _ in range(len(log) + 1)]
    for i, j in copies:
        before[max(i + 1, j)].append(log[i])
    out: list[Logged] = []
    for k, extra in enumerate(before):
        out += extra
        out += log[k : k + 1]
    return out


def assigned_earlier(log: list[Logged], moves: list[int]) -> list[Logged]:
    """Move ``assigned`` messages earlier, but never before the ``queued`` they answer (for
    a durable step queued again after a wait, the task whose deliveries it counts from):
    the worker appended it before the dispatcher, which had not read it yet, decided more."""
    out = list(log)
    for n, pick in enumerate(moves):
        where = [i for i, e in enumerate(out) if isinstance(e.message, StepAssigned)]
        if not where:
            break
        i = where[(n + pick) % len(where)]
        m = out[i].message
        q = max(
            k
            for k, e in enumerate(out[:i])
            if isinstance(e.message, Task)
            and (e.message.run_id, e.message.step, e.message.attempt)
            == (m.run_id, m.step, m.attempt)
            and e.message.delivery_offset < m.delivery
        )
        entry = out.pop(i)
        out.insert(q + 1 + pick % (i - q), entry)
    return out


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_folding_twice_or_with_duplicates_changes_nothing(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
    sim, log = simulated(data, wf, script, answers)
    once = rebuild(log)
    if len(log) == len(sim.log):
        assert once == sim.state  # the restart rebuilds the live dispatcher
    assert rebuild(log + log) == once
    assert rebuild([e for e in log for _ in range(2)]) == once
    index = st.integers(0, len(log) - 1)
    copies = data.draw(st.lists(st.tuples(index, st.integers(0, len(log))), max_size=30))
    assert rebuild(with_duplicates(log, copies)) == once


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_assignments_landing_before_decisions_fold_the_same(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
    _, log = simulated(data, wf, script, answers)
    moves = data.draw(st.lists(st.integers(0, 100), max_size=10))
    assert rebuild(assigned_earlier(log, moves)) == rebuild(log)
