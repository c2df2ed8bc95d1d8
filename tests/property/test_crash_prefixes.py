"""The dispatcher appends a decision's messages one after another, without an atomic
batch: a crash can leave any prefix of a decision in the log. Killed between any two
appends of any decision, it recovers from the log alone the state it would have reached:
it rebuilds, finishes what the log implies (``complete``), is handed the unacked input
again, and appends exactly the missing messages, none of them twice (dedup ids)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import complete, step
from dispatcher.step import settle
from schemas import WorkflowDef
from tests.property.harness import MAX_BYTES, Sim, rebuild
from tests.property.history import SCOPE
from tests.property.strategies import Action, Outcome, drain_outcomes, scripts, workflows

PURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PURE
@given(workflows(), scripts, drain_outcomes, st.data())
def test_a_crash_between_any_two_appends_recovers_the_same_state(
    wf: WorkflowDef, script: list[Action], answers: list[Outcome], data: st.DataObject
) -> None:
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
        appended += settle(state, None, None, unfinished, MAX_BYTES, decision.now)
    appended += step(state, SCOPE, decision.cause, decision.now, MAX_BYTES)  # redelivered
    new = [o.msg_id for o in appended if o.msg_id not in ids]

    missing = [o.msg_id for o in decision.outputs[stored:]]
    assert sorted(new) == sorted(missing), "recovery appended other messages than were lost"
    assert len(set(new)) == len(new), "recovery appended a message twice"
    assert state == rebuild(sim.log[: decision.start + len(decision.outputs)])
