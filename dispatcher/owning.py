"""Which partition of a tenant's dispatch decides on an input (``dispatcher.partition``).

Pure: a function of the folded state, which every partition holds alike at the same point
of the log. A run's input (a result, an assignment, a wait, a cancel request) is its
owner's; a request is decided by the partition that owns (or would own) the run it names;
crons' and scheduled runs' records are partition 0's; events and registrations every
partition's (an event creates, and wakes, only the runs of the partition deciding on it:
``dispatcher.decide``). Whoever does not decide on an input folds it, as a restart does.
"""

from __future__ import annotations

from dispatcher.crons import TRIGGER_MESSAGES
from dispatcher.replay import Replay
from dispatcher.state import State
from schemas.messages import RunRequested
from schemas.subjects import Scope


def decides(state: State, scope: Scope, subject: str, message: object) -> bool:
    """Whether ``state``'s partition decides on ``message``, the input on ``subject``."""
    part = state.partition
    if part.whole:
        return True
    if isinstance(message, TRIGGER_MESSAGES):
        return part.coordinator
    if isinstance(message, Replay):
        req, original = message.request, message.original
        name = original.workflow if original is not None else req.workflow
        return creates(state, scope, req.run_id, name, req.priority)
    if isinstance(message, RunRequested):
        return creates(state, scope, message.run_id, message.workflow, message.priority)
    if ".runs." in subject:
        run = state.run(scope, subject.split(".")[3])
        return run is None or state.owns(run)  # an unknown run's input decides nothing
    return True


def creates(state: State, scope: Scope, run_id: str, workflow: str, priority: int | None) -> bool:
    """Whether ``state``'s partition decides on a request for run ``run_id`` of
    ``workflow``: it owns the run (known), or would own it created; a request that can only
    be rejected (no such workflow) goes by the run id."""
    run = state.run(scope, run_id)
    if run is not None:
        return state.owns(run)
    wf = state.workflows.get((scope, workflow))
    if wf is None:
        return state.partition.owns(run_id, coordinated=False)
    return state.owns_new(run_id, wf, priority)
