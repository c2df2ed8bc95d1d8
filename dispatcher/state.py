"""The dispatcher's state: a fold of the log. Pure: no IO, no clocks."""

from __future__ import annotations

from typing import Any

import attrs

from schemas.messages import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunStatus,
    StepDef,
    StepFinished,
    StepQueued,
    WorkflowDef,
)
from schemas.subjects import Scope


@attrs.define
class StepState:
    spec: StepDef
    status: RunStatus | None = None  # None: waiting for its parents
    attempt: int = 0
    output: Any = None
    error: str | None = None


@attrs.define
class RunState:
    scope: Scope
    run_id: str
    workflow: str
    input: Any
    steps: dict[str, StepState]

    def children_of(self, name: str) -> list[StepState]:
        return [s for s in self.steps.values() if name in s.spec.parents]

    def ready(self, step: StepState) -> bool:
        return step.status is None and all(
            self.steps[p].status is RunStatus.SUCCEEDED for p in step.spec.parents
        )


@attrs.define
class State:
    """Registered workflows, runs in flight, and the ids of runs that are over."""

    workflows: dict[tuple[Scope, str], WorkflowDef] = attrs.Factory(dict)
    runs: dict[str, RunState] = attrs.Factory(dict)
    done: set[str] = attrs.Factory(set)

    def known(self, run_id: str) -> bool:
        return run_id in self.runs or run_id in self.done


def fold(state: State, scope: Scope, message: object) -> None:
    """Apply one logged message. Idempotent: folding a message twice changes nothing more."""
    match message:
        case WorkflowDef():
            state.workflows[(scope, message.name)] = message
        case RunCreated():
            if state.known(message.run_id):
                return
            state.runs[message.run_id] = RunState(
                scope=scope,
                run_id=message.run_id,
                workflow=message.workflow,
                input=message.input,
                steps={s.name: StepState(spec=s) for s in message.steps},
            )
        case RunRejected():
            state.done.add(message.run_id)
        case StepQueued():
            step = _step(state, message.run_id, message.step)
            if step is not None and message.attempt > step.attempt and not _terminal(step):
                step.status = RunStatus.QUEUED
                step.attempt = message.attempt
        case StepFinished():
            step = _step(state, message.run_id, message.step)
            if step is not None and not _terminal(step):
                step.status = message.status
                step.attempt = message.attempt
                step.output = message.output
                step.error = message.error
        case RunFinished():
            state.runs.pop(message.run_id, None)
            state.done.add(message.run_id)
        case _:
            pass  # assignments, results and logs change nothing the dispatcher decides on


def _step(state: State, run_id: str, name: str) -> StepState | None:
    run = state.runs.get(run_id)
    return None if run is None else run.steps.get(name)


def _terminal(step: StepState) -> bool:
    return step.status is not None and step.status.terminal
