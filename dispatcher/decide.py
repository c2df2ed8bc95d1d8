"""What the dispatcher appends in answer to an input. Pure: returns messages, never does IO.

Every output carries a deterministic dedup id, so deciding the same input twice (after a
crash between append and ack) appends nothing new.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from dispatcher.state import RunState, State, StepState
from schemas.messages import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepFinished,
    StepQueued,
    StepResult,
    Task,
    TriggeredBy,
    WorkflowDef,
)
from schemas.subjects import Scope

RUN_ID_NAMESPACE = uuid.UUID("6f0c6f2e-1f4b-4a53-9d0e-6b3c5b1f7a21")


@attrs.frozen
class Output:
    subject: str
    message: Any
    msg_id: str


@attrs.frozen
class Event:
    """A user event as the dispatcher sees it: its key, stream sequence and JSON body."""

    key: str
    seq: int
    payload: Any


def event_run_id(scope: Scope, event_seq: int, workflow: str) -> str:
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{scope.prefix}/{event_seq}/{workflow}"))


def decide(state: State, scope: Scope, message: object) -> list[Output]:
    match message:
        case Event():
            return _on_event(state, scope, message)
        case RunRequested():
            return _on_requested(state, scope, message)
        case StepResult():
            return _on_result(state, message)
        case _:
            return []


def _on_event(state: State, scope: Scope, event: Event) -> list[Output]:
    out: list[Output] = []
    for (wf_scope, name), wf in sorted(state.workflows.items(), key=lambda kv: kv[0][1]):
        if wf_scope != scope or event.key not in wf.on_events:
            continue
        run_id = event_run_id(scope, event.seq, name)
        if state.known(run_id):
            continue
        trigger = TriggeredBy(event_key=event.key, event_id=str(event.seq))
        out += _create(scope, wf, run_id, event.payload, trigger)
    return out


def _on_requested(state: State, scope: Scope, req: RunRequested) -> list[Output]:
    if state.known(req.run_id):
        return []
    wf = state.workflows.get((scope, req.workflow))
    if wf is None:
        reason = f"no worker has registered workflow {req.workflow!r} in {scope.prefix}"
        rejected = RunRejected(run_id=req.run_id, workflow=req.workflow, reason=reason)
        return [Output(scope.run(req.run_id, "rejected"), rejected, f"{req.run_id}:rejected")]
    return _create(scope, wf, req.run_id, req.input, None)


def _create(
    scope: Scope, wf: WorkflowDef, run_id: str, payload: Any, trigger: TriggeredBy | None
) -> list[Output]:
    created = RunCreated(
        run_id=run_id,
        workflow=wf.name,
        workflow_version=wf.version,
        input=payload,
        steps=wf.steps,
        triggered_by=trigger,
    )
    run = RunState(
        scope=scope,
        run_id=run_id,
        workflow=wf.name,
        input=payload,
        steps={s.name: StepState(spec=s) for s in wf.steps},
    )
    out = [Output(scope.run(run_id, "created"), created, f"{run_id}:created")]
    for step in run.steps.values():
        if run.ready(step):
            out += _queue(run, step, attempt=1)
    return out


def _queue(run: RunState, step: StepState, attempt: int) -> list[Output]:
    name = step.spec.name
    queued = StepQueued(run_id=run.run_id, step=name, attempt=attempt)
    task = Task(
        run_id=run.run_id,
        workflow=run.workflow,
        step=name,
        attempt=attempt,
        input=run.input,
        parent_outputs={p: run.steps[p].output for p in step.spec.parents},
        timeout_s=step.spec.timeout_s,
        queued_at=queued.queued_at,
    )
    key = f"{run.run_id}:{name}:{attempt}"
    return [
        Output(run.scope.run(run.run_id, "queued"), queued, f"{key}:queued"),
        Output(run.scope.task(run.workflow, name), task, f"{key}:task"),
    ]


def _on_result(state: State, result: StepResult) -> list[Output]:
    run = state.runs.get(result.run_id)
    if run is None:
        return []  # a late duplicate for a run that is over, or a stray message
    step = run.steps.get(result.step)
    if step is None or step.status is None or step.status.terminal:
        return []
    if result.attempt != step.attempt:
        return []  # a stale attempt: a newer one is already queued
    scope = run.scope
    key = f"{run.run_id}:{step.spec.name}"
    if not result.ok and result.attempt <= step.spec.retries:
        return _queue(run, step, attempt=result.attempt + 1)
    status = RunStatus.SUCCEEDED if result.ok else RunStatus.FAILED
    finished = StepFinished(
        run_id=run.run_id,
        step=step.spec.name,
        attempt=result.attempt,
        delivery=result.delivery,
        status=status,
        output=result.output if result.ok else None,
        error=result.error,
    )
    out = [Output(scope.run(run.run_id, "step_finished"), finished, f"{key}:finished")]
    # Decide on a copy of the run as it will be once this verdict is folded.
    after = attrs.evolve(
        run,
        steps={
            **run.steps,
            step.spec.name: attrs.evolve(step, status=status, output=finished.output),
        },
    )
    if not result.ok:
        error = f"step {step.spec.name!r} failed: {result.error}"
        return [*out, _finish(run, RunStatus.FAILED, error)]
    for child in after.children_of(step.spec.name):
        if after.ready(child):
            out += _queue(after, child, attempt=1)
    if all(s.status is RunStatus.SUCCEEDED for s in after.steps.values()):
        out.append(_finish(run, RunStatus.SUCCEEDED, None))
    return out


def _finish(run: RunState, status: RunStatus, error: str | None) -> Output:
    finished = RunFinished(run_id=run.run_id, status=status, error=error)
    return Output(run.scope.run(run.run_id, "finished"), finished, f"{run.run_id}:finished")
