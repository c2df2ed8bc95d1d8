"""The placement gate (issue 15): plugs :mod:`dispatcher.placement` into the hold framework
(:mod:`dispatcher.holds`). For each task a decision offers, it looks at the step's desired
labels and the run's sticky strategy (its workflow's current registration):

- neither: the task goes on as it is, to the workflow's shared queue (no lookup of the
  live workers at all);
- placed: the task goes to that worker's directed subject, naming the worker in its body
  (``Task.worker_id``), and the worker counts one slot less until its next heartbeat;
- not now: the task is held, ``LABELS`` or ``STICKY``, with placement's reason; the service
  marks the holds changed whenever the live workers change (``Workers.generation``), and
  ``release`` tries them again.

The registry of live workers (``state.workers``) is an outside input, like time: the gate
reads it, and the decision it makes is recorded in the task's subject and body.
"""

from __future__ import annotations

import datetime as dt

import attrs

from dispatcher.holds import Go, Hold, Verdict
from dispatcher.placement import Placed, Wait, place
from dispatcher.state import RunState, State, StepState
from schemas.holds import HoldKind
from schemas.messages import Task

_KINDS = {"labels": HoldKind.LABELS, "sticky": HoldKind.STICKY}


def placement_gate(
    state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
) -> Verdict:
    """A :class:`dispatcher.holds.Gate`: where the task goes, over ``state.workers``."""
    desired = step.spec.desired_worker_labels
    wf = state.workflows.get((run.scope, run.workflow))
    sticky = None if wf is None else wf.sticky
    if not desired and sticky is None:
        return Go()
    got = place(
        state.workers.live(run.scope, now),
        run.workflow,
        task.step,
        desired,
        sticky,
        run.worker,
        seed=f"{task.run_id}:{task.step}:{task.attempt}",
    )
    if isinstance(got, Wait):
        return Hold(_KINDS[got.kind], got.reason)
    if isinstance(got, Placed):
        state.workers.sent(run.scope, got.worker_id, task.run_id, task.step, task.attempt)
        subject = run.scope.directed_task(got.worker_id, task.workflow, task.step)
        return Go(subject=subject, task=attrs.evolve(task, worker_id=got.worker_id))
    return Go()
