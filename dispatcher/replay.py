"""Re-running a run that is over (``natchet runs replay``), as new history linked to it.

A ``requested`` message naming ``replay_of`` asks for a new run of the same workflow with
the same input. The service reads the replayed run's history from the log (the dispatcher
has forgotten runs that ended) and folds it here into an :class:`Original`; the decision is
then pure. From a step, the new run keeps the outputs of every step that succeeded and is
not that step or downstream of it, and runs the rest; the steps upstream of it must have
succeeded. The new run follows the workflow as registered now (a re-run usually follows a
fix), and its ``created`` records the link (``trigger``) and the outputs it kept, so it
folds without the original. The original's history is never touched.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs

from dispatcher.decide import Output, create, reject
from dispatcher.state import State
from schemas.messages import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepFinished,
    Trigger,
    WorkflowDef,
)
from schemas.subjects import NAME_RE, Scope


@attrs.frozen
class Original:
    """A run as a replay needs it: its workflow and input, whether (and how) it ended, and
    the outputs of its steps that succeeded (kept ones included)."""

    run_id: str
    workflow: str
    input: Any
    status: RunStatus | None  # None: still in flight (or rejected: ``created`` is None)
    outputs: dict[str, Any]
    created: bool = True
    metadata: dict[str, str] = attrs.Factory(dict)  # its additional metadata, carried over


@attrs.frozen
class Replay:
    """The input the service decides on: a replay request with the run it names (None:
    the log has no run of that id in the request's namespace)."""

    request: RunRequested
    original: Original | None


def original_of(run_id: str, messages: Iterable[object]) -> Original | None:
    """Fold a run's own messages (in log order) into what a replay of it needs."""
    created: RunCreated | None = None
    requested: RunRequested | None = None
    status: RunStatus | None = None
    outputs: dict[str, Any] = {}
    for m in messages:
        match m:
            case RunRequested():
                requested = requested or m
            case RunCreated():
                created = created or m
                outputs.update(m.kept)
            case RunRejected():
                return Original(run_id, m.workflow, None, RunStatus.FAILED, {}, created=False)
            case StepFinished():
                _verdict(outputs, m)
            case RunFinished():
                for verdict in m.steps:
                    _verdict(outputs, verdict)
                status = m.status
    if created is None and requested is not None:  # asked for, not created yet
        return Original(run_id, requested.workflow, None, None, {})
    if created is None:
        return None
    return Original(
        run_id, created.workflow, created.input, status, outputs,
        metadata=created.additional_metadata,
    )  # fmt: skip


def _verdict(outputs: dict[str, Any], verdict: StepFinished) -> None:
    if verdict.status is RunStatus.SUCCEEDED:
        outputs[verdict.step] = verdict.output


def replayable_id(run_id: str) -> bool:
    """Whether ``run_id`` can name a run in a subject (a wildcard or dot never reads
    another run's history)."""
    return bool(NAME_RE.match(run_id))


def decide_replay(state: State, scope: Scope, replay: Replay, now: dt.datetime) -> list[Output]:
    req, original = replay.request, replay.original
    if state.known(req.run_id):
        return []
    target = req.replay_of or ""
    if not replayable_id(target):
        return reject(scope, req.run_id, req.workflow, f"{target!r} is not a run id", now)
    if original is None:
        return reject(scope, req.run_id, req.workflow, f"no run {target} in {scope.prefix}", now)
    workflow = original.workflow
    if not original.created:
        reason = f"run {target} was rejected, never created: there is nothing to replay"
        return reject(scope, req.run_id, workflow, reason, now)
    if original.status is None:
        reason = f"run {target} has not ended: replay it once it has (or cancel it first)"
        return reject(scope, req.run_id, workflow, reason, now)
    wf = state.workflows.get((scope, workflow))
    if wf is None:
        reason = f"no worker has registered workflow {workflow!r} in {scope.prefix} any more"
        return reject(scope, req.run_id, workflow, reason, now)
    kept = _kept(wf, original, req.from_step)
    if isinstance(kept, str):
        return reject(scope, req.run_id, workflow, kept, now)
    trigger = Trigger.of_replay(target, req.from_step)
    metadata = {**original.metadata, **req.additional_metadata}
    return create(scope, wf, req.run_id, original.input, trigger, now, metadata, req.priority, kept)


def _kept(wf: WorkflowDef, original: Original, from_step: str | None) -> dict[str, Any] | str:
    """The outputs a replay from ``from_step`` keeps, or why it cannot start there."""
    if from_step is None:
        return {}
    names = [s.name for s in wf.steps]
    if from_step not in names:
        return (
            f"workflow {wf.name!r} has no step {from_step!r} to replay from "
            f"(its steps: {', '.join(names)})"
        )
    again = downstream(wf, from_step)
    for parent in upstream(wf, from_step):
        if parent not in original.outputs:
            return (
                f"step {from_step!r} needs the output of {parent!r}, which did not succeed in "
                f"run {original.run_id}: replay from {parent!r} (or the whole run)"
            )
    return {n: original.outputs[n] for n in names if n not in again and n in original.outputs}


def downstream(wf: WorkflowDef, name: str) -> set[str]:
    """``name`` and every step that depends on it, directly or not."""
    found = {name}
    changed = True
    while changed:
        changed = False
        for s in wf.steps:
            if s.name not in found and found.intersection(s.parents):
                found.add(s.name)
                changed = True
    return found


def upstream(wf: WorkflowDef, name: str) -> set[str]:
    """Every step ``name`` depends on, directly or not."""
    parents = {s.name: s.parents for s in wf.steps}
    found: set[str] = set()
    todo = list(parents.get(name, ()))
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(parents.get(p, ()))
    return found
