"""Priority and step-level concurrency as gates (issue 15, ``dispatcher.holds``). Pure:
verdicts over the folded state and what ``dispatcher.flowindex`` counts in it.

**Step concurrency** (:func:`step_concurrency`): a step that declares ``concurrency``
has, per run, a key fixed when the run was created (``RunState.step_keys``). At most
``max_runs`` runs have that step in flight per (namespace, workflow, step, key): offered,
running, or in a durable wait, until its result is folded. A task over that is held; a new
task of a key that already has tasks held waits behind them, so each key's tasks go oldest
first (higher priority first when they have one). Keys are independent: one key's tasks
never wait for another's room. That is ``GROUP_ROUND_ROBIN``; the other two strategies
hold nothing, and decide as the workflow's do (``dispatcher.admission``), over tasks:

- ``CANCEL_IN_PROGRESS``: a task of a full key goes, and the runs of the oldest tasks of
  the key in flight are cancelled first to make room.
- ``CANCEL_NEWEST``: a task of a full key is not offered: its run is cancelled.

A task's age is its run's (creation order, ``FlowIndex.age``), as Hatchet ranks a key's
tasks by their ids: the strategy keeps the newest ``max_runs`` of the key's tasks in flight
and the task coming in (``CANCEL_IN_PROGRESS``), or the oldest (``CANCEL_NEWEST``), and
cancels the runs of the others. In the usual case the task coming in is the newest (a first
step, or steps that become ready in their runs' order); one that is not (a retry, a run
whose earlier steps took longer) is ranked by its run all the same. Ranking by a fixed order
makes the outcome of several tasks coming in (one decision or a batch, or ``complete``
making them again after a restart, in whatever order) the same whatever their order.

**Priority** (:func:`priority`): the tasks of a run with a priority (its trigger's or its
workflow's ``default_priority``) are windowed: they go to the workers only while fewer
tasks of the workflow's prioritized runs are out with them (offered, result not folded)
than the live workers of the workflow have slots (``state.capacity``, from their
heartbeats). Beyond that the dispatcher keeps the backlog itself, and as results come in
it offers the held tasks highest priority first, oldest first within a priority
(``dispatcher.held``'s line). A new task also waits while tasks of its workflow of its
priority or higher are held (they were first). With no live worker the capacity is 0:
the task waits in the dispatcher until one starts, or its ``schedule_timeout`` fails it.
"""

from __future__ import annotations

import datetime as dt

from dispatcher.flowindex import KeyId
from dispatcher.holds import Cancel, Go, Hold, Verdict
from dispatcher.state import RunState, State, StepState
from schemas.concurrency import ConcurrencyDef, LimitStrategy
from schemas.holds import HoldKind
from schemas.messages import Task

_GO = Go()


def step_concurrency(
    state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
) -> Verdict:
    """Hold the task while its step's key has ``max_runs`` in flight, or older tasks of
    the key are held."""
    spec = step.spec.concurrency
    key = run.step_keys.get(step.spec.name)
    if spec is None or key is None:
        return _GO
    kid = (run.scope, run.workflow, step.spec.name, key)
    if spec.limit_strategy is not LimitStrategy.GROUP_ROUND_ROBIN:
        return _cancel_strategy(state, run, step.spec.name, key, kid, spec)
    busy = state.flow.in_flight(kid, run.run_id)
    if busy >= spec.max_runs:
        return Hold(
            HoldKind.CONCURRENCY,
            f"step concurrency key {key!r} has {busy} of {spec.max_runs} in flight",
        )
    ref = (run.run_id, step.spec.name)
    mine = state.holds.tasks.get(ref)
    if step.held and mine is None:
        # Held before a restart, made again by ``complete`` in no particular order: it
        # takes its place in line first, and goes from there.
        why = f"step concurrency key {key!r}: back in line after a restart"
        return Hold(HoldKind.CONCURRENCY, why, recheck_at=now)
    # A new task waits behind the key's tasks held; a held one behind those ahead of it in
    # line (one held for another gate, e.g. priority's window, still goes first). ``any``
    # stops at the first found: a pass over a key's k held tasks looks at about k log k.
    ahead = state.flow.others_held(kid, run.run_id)
    if not ahead:
        return _GO
    if mine is None:
        why = f"step concurrency key {key!r}: {ahead} earlier task(s) of the key first"
        return Hold(HoldKind.CONCURRENCY, why)
    if any(
        other != run.run_id
        and (held := state.holds.tasks.get((other, step.spec.name))) is not None
        and held.line < mine.line
        for other in state.flow.key_held.get(kid, ())
    ):
        return Hold(HoldKind.CONCURRENCY, f"step concurrency key {key!r}: earlier task(s) first")
    return _GO


def _cancel_strategy(
    state: State, run: RunState, name: str, key: str, kid: KeyId, spec: ConcurrencyDef
) -> Verdict:
    """Go while the key has room; else cancel the runs the strategy names: of the key's
    tasks in flight and this one, ranked by age, all but the newest ``max_runs``
    (``CANCEL_IN_PROGRESS``) or all but the oldest (``CANCEL_NEWEST``)."""
    flow = state.flow
    others = flow.keyed_runs(kid) - {run.run_id}
    if len(others) < spec.max_runs:
        return _GO
    ranked = sorted((*others, run.run_id), key=flow.age)  # oldest first
    over = len(ranked) - spec.max_runs
    if spec.limit_strategy is LimitStrategy.CANCEL_IN_PROGRESS:
        why = f"cancelled: a newer task of step {name!r} concurrency key {key!r} took its place"
        losers = ranked[:over]
    else:
        why = (
            f"cancelled: step {name!r} concurrency key {key!r} already has {spec.max_runs} "
            "task(s) in flight, and this run's is the newest (CANCEL_NEWEST)"
        )
        losers = ranked[-over:]
    return Cancel(tuple((loser, why) for loser in losers))


def priority(state: State, run: RunState, step: StepState, task: Task, now: dt.datetime) -> Verdict:
    """Hold the task of a prioritized run while the workflow's tasks out with its
    workers fill their slots, or held tasks of its priority or higher come first."""
    if run.priority is None or state.capacity is None:
        return _GO
    wid = (run.scope, run.workflow)
    ref = (run.run_id, step.spec.name)
    capacity = state.capacity(run.scope, run.workflow, now)
    out = state.flow.outstanding(wid, ref)
    in_line = ref in state.holds.tasks  # released from the line, in its order
    if step.held and not in_line:
        # Held before a restart, made again by ``complete`` in no particular order: it
        # takes its place in line first, and goes from there (at once, if it is first).
        why = f"priority {run.priority}: back in line after a restart"
        return Hold(HoldKind.PRIORITY, why, recheck_at=now)
    if out < capacity and (in_line or not _ahead(state, run, ref)):
        return _GO  # a held task goes in line (``Holds.in_line``), a new one behind them
    if capacity == 0:
        why = (
            f"priority {run.priority}: no live worker runs workflow {run.workflow!r} "
            "(capacity 0): waits for one, or its schedule_timeout"
        )
    else:
        ahead = state.flow.held_at_least(wid, run.priority, ref)
        why = (
            f"priority {run.priority}: {ahead} step(s) of this workflow of priority "
            f"{run.priority} or higher ahead; {out} out with workers, capacity {capacity}"
        )
    return Hold(HoldKind.PRIORITY, why)


def _ahead(state: State, run: RunState, ref: tuple[str, str]) -> bool:
    """Whether a task of the run's workflow of its priority or higher is held for
    priority (not for its key, say): a new task lets those go first. The index answers
    "none" at once in the usual case; only then are the held tasks looked at."""
    assert run.priority is not None
    if not state.flow.held_at_least((run.scope, run.workflow), run.priority, ref):
        return False
    return any(
        held.kind is HoldKind.PRIORITY
        and held.priority >= run.priority
        and held.scope == run.scope
        and held.output.message.workflow == run.workflow
        and key != ref
        for key, held in state.holds.tasks.items()
    )


# In order: a step's key first (a task held for its key takes no window slot), then
# priority.
FLOW_GATES = (step_concurrency, priority)
