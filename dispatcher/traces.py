"""The dispatcher's spans (``eventstore.tracing``, off unless ``NATCHET_TRACING``): one when
it starts a run, a child of the event's or request's context if its headers carry one, and
one for each step it queues, a child of its run's. Each goes on in the headers of what was
decided (``created``, the task), so a worker's attempt is a child of its step.

A run's context is kept in memory from its start to its end. After an engine restart, the
steps of runs started before it are queued under no run (each its own trace): spans are
observations, not history, and are not rebuilt from the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from dispatcher.decide import Output
from eventstore import tracing
from schemas import RunCreated, RunFinished, RunRejected, Task


class RunTraces:
    def __init__(self, tracer: Any, tenant: str) -> None:
        self._tracer = tracer
        self._tenant = tenant
        self._runs: dict[str, Any] = {}  # run id -> its context

    def carry(self, headers: Mapping[str, str] | None, outputs: list[Output]) -> list[Output]:
        """``outputs`` of a decision on a message with ``headers`` (None: on time), with the
        trace context of their spans in their headers."""
        if not outputs:
            return outputs
        parent = tracing.parent_of(headers)
        carried = []
        for out in outputs:
            message = out.message
            if isinstance(message, RunCreated):
                carried.append(self._run(out, message, parent))
                continue
            if isinstance(message, Task):
                carried.append(self._step(out, message, parent))
                continue
            if isinstance(message, RunFinished | RunRejected):
                self._runs.pop(message.run_id, None)
            carried.append(out)
        return carried

    def _attributes(self, run_id: str, workflow: str) -> dict[str, Any]:
        return {
            "natchet.tenant": self._tenant,
            "natchet.run_id": run_id,
            "natchet.workflow": workflow,
        }

    def _run(self, out: Output, run: RunCreated, parent: Any | None) -> Output:
        name = f"natchet.run {run.workflow}"
        headers = tracing.point(
            self._tracer, name, parent, self._attributes(run.run_id, run.workflow)
        )
        self._runs[run.run_id] = tracing.parent_of(dict(headers))
        return attrs.evolve(out, headers=headers)

    def _step(self, out: Output, task: Task, parent: Any | None) -> Output:
        attributes = self._attributes(task.run_id, task.workflow)
        attributes |= {"natchet.step": task.step, "natchet.attempt": task.attempt}
        context = self._runs.get(task.run_id, parent)
        headers = tracing.point(self._tracer, f"natchet.step {task.step}", context, attributes)
        return attrs.evolve(out, headers=headers)
