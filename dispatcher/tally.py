"""What the dispatcher's decisions did, counted from the messages they append. Pure: no IO.

The engine's task counters (``natchet.metrics``) are fed from here, so they count what the
log holds and agree with the read model the projector folds from the same messages. A
*task* is a step offered to workers at least once; the counts, by (namespace, workflow):

- ``created``: a step's first task (attempt 1).
- ``retried``: a retry decided: a retry scheduled with backoff, or the next attempt's task
  offered at once (a due retry's task is not counted again).
- ``succeeded`` / ``failed`` / ``cancelled``: a task's verdict (``step_finished``, or one
  inside the run's ``finished``). Verdicts on steps never offered (attempt 0: the rest of a
  DAG cancelled with its run, an on-failure step not needed) are not tasks and not counted.
- ``timed_out``: a failed verdict decided with no input, only time passing: a step no worker
  picked up within the workflow's ``schedule_timeout``.
- ``reassigned``: a worker took a later delivery of an attempt another worker had taken (a
  dead worker's task redelivered, or a task handed back on shutdown).
- ``moved``: a placed task offered again, same attempt, because its worker went
  (:mod:`dispatcher.moved`); not counted ``created`` or ``retried`` again.
- ``held``: a task kept back by flow control (``runs.<id>.held``: a rate limit with no
  room, ...), once per attempt and reason; it is counted ``created`` (or ``retried``) when
  decided, held or not.
- ``waits``: for each attempt's first assignment, the seconds from its task being queued to
  a worker starting it.

So, for a tenant, ``created = succeeded + failed + cancelled + tasks still in flight``.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable
from typing import Protocol

import attrs

from dispatcher.decide import Output
from dispatcher.policy import parse_time
from dispatcher.state import State
from schemas.holds import StepHeld
from schemas.messages import (
    RunFinished,
    RunStatus,
    StepAssigned,
    StepFinished,
    StepResult,
    StepRetryScheduled,
    Task,
)

# (what, namespace, workflow)
Key = tuple[str, str, str]

_VERDICTS = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


@attrs.define
class Tally:
    """Counts and queue waits of some decisions, to be reported once they are stored."""

    counts: collections.Counter[Key] = attrs.Factory(collections.Counter)
    waits: list[tuple[str, str, float]] = attrs.Factory(list)  # (namespace, workflow, s)

    def add(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.waits.extend(other.waits)

    def __bool__(self) -> bool:
        return bool(self.counts or self.waits)


class Observer(Protocol):
    """Who hears what a dispatcher did (the engine's metrics)."""

    def stored(self, tenant: str, tally: Tally) -> None:
        """Decisions were appended, and the log acknowledged every message of them."""

    def decided(self, tenant: str, seconds: Iterable[float]) -> None:
        """Inputs were decided and their decisions stored, ``seconds`` after the log stored
        each input."""

    def append_failed(self, tenant: str, reason: str) -> None:
        """An append of the dispatcher's failed (``reason``: a short, fixed word)."""


def observe(state: State, message: object, outputs: Iterable[Output]) -> Tally:
    """What deciding ``message`` (None: time passing) into ``outputs`` does, judged against
    ``state`` as it was before either is folded."""
    tally = outcomes(state, outputs, by_time=message is None)
    if isinstance(message, StepAssigned | StepResult):
        _taken(state, message, tally)
    return tally


def outcomes(
    state: State,
    outputs: Iterable[Output],
    *,
    by_time: bool = False,
    withdrawn: Iterable[Output] = (),
) -> Tally:
    """What ``outputs`` do, judged against ``state`` before they are folded: a decision's
    (``observe``), or what flow control adds to it (a strategy's cancellations, a gate's
    failed step, an admitted run's first tasks: ``dispatcher.holds.gate``'s ``seen``).
    ``by_time``: decided with no input, so a failure is a timeout. ``withdrawn``: first
    tasks of the same decision, counted ``created`` with it, that a strategy cancelled
    with their runs before they went: not tasks after all (their steps end at attempt 0).
    They are taken back in the same tally, so what is reported never goes below zero."""
    tally = Tally()
    count = tally.counts
    for out in withdrawn:
        count["created", _namespace(out.subject), out.message.workflow] -= 1
    for out in outputs:
        m = out.message
        namespace = _namespace(out.subject)
        if isinstance(m, Task):
            if m.moves:
                count["moved", namespace, m.workflow] += 1
            elif m.attempt == 1:
                count["created", namespace, m.workflow] += 1
            else:
                run = state.runs.get(m.run_id)
                step = None if run is None else run.steps.get(m.step)
                if step is None or step.retry_due is None:  # not the task of a due retry
                    count["retried", namespace, m.workflow] += 1
        elif isinstance(m, StepRetryScheduled):
            count["retried", namespace, _workflow(state, m.run_id)] += 1
        elif isinstance(m, StepFinished | RunFinished):
            verdicts = m.steps if isinstance(m, RunFinished) else (m,)
            workflow = _workflow(state, m.run_id)
            for verdict in verdicts:
                if verdict.attempt < 1:
                    continue  # never offered: not a task
                count[_VERDICTS[verdict.status], namespace, workflow] += 1
                if by_time and verdict.status is RunStatus.FAILED:
                    count["timed_out", namespace, workflow] += 1
    return tally


def held(state: State, outputs: Iterable[Output]) -> Tally:
    """The ``held`` records among a decision's outputs, after the gates
    (``dispatcher.holds``), by namespace and workflow."""
    tally = Tally()
    for out in outputs:
        if isinstance(out.message, StepHeld):
            workflow = _workflow(state, out.message.run_id)
            tally.counts["held", _namespace(out.subject), workflow] += 1
    return tally


def _taken(state: State, taken: StepAssigned | StepResult, tally: Tally) -> None:
    """A worker took a delivery of a task (its ``assigned``, or the result of a step too fast
    to have one): the attempt's first delivery taken ends its wait in the queue; a later one
    than any taken before is a reassignment."""
    run = state.runs.get(taken.run_id)
    step = None if run is None else run.steps.get(taken.step)
    if run is None or step is None or step.terminal or taken.attempt != step.attempt:
        return
    if taken.delivery <= step.delivery:
        return  # this delivery (or a later one) was seen taken already
    namespace = run.scope.namespace
    if taken.delivery > 1:
        tally.counts["reassigned", namespace, run.workflow] += 1
    if step.delivery == 0 and step.queued_at is not None:
        started = taken.started_at
        if started is not None:
            wait = (parse_time(started) - step.queued_at).total_seconds()
            tally.waits.append((namespace, run.workflow, max(wait, 0.0)))


def _workflow(state: State, run_id: str) -> str:
    run = state.runs.get(run_id)
    return "" if run is None else run.workflow


def _namespace(subject: str) -> str:
    """``<tenant>.<namespace>.…``: the namespace of one of the dispatcher's own subjects."""
    return subject.split(".", 2)[1]


def age_s(stored_at: dt.datetime | None, now: dt.datetime) -> float | None:
    """Seconds from when the log stored a message to ``now`` (None: the time is unknown)."""
    return None if stored_at is None else max((now - stored_at).total_seconds(), 0.0)
