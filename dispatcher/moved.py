"""Moved tasks (issue 15): a task placed on one worker (:mod:`dispatcher.placing`) only that
worker can pull. When that worker goes before the step ends, its task is offered again,
through the gates: it is **moved**. Pure: a decision over the folded state and the live
workers (``state.workers``, an outside input like time), recorded in the log by the task it
appends (or by the step's ``held`` record), so replaying the log never decides it again.

A step's task moves off worker ``W`` (``StepState.worker``) when its attempt has not ended
(not over, no retry scheduled, not in a durable wait: a wake places its task again anyway,
not held: no task is out) and

- ``W`` is gone: the registry no longer counts it alive (no beat for ``DEAD_AFTER_S``, or
  it said ``STOPPED``), whatever the step was doing there; or
- ``W`` is stopping (``STOPPING``: it pulls nothing more) and the step is not running
  there: still waiting on its directed consumer, or handed back (a graceful stop gives the
  task back to that same consumer, which nobody reads any more). A step running on a
  stopping worker is left to finish there (its grace period); it moves if it is handed
  back, or if the worker goes without a result.

The move is the same attempt (no retry taken) with a distinct dedup id,
``<run>:<step>:<attempt>:task[:<wakes>]:moved:<n>`` (``Task.moves`` = n, the n-th move of
that task; ``Task.moved_from`` = ``W``). Its ``delivery_offset`` is every delivery seen so
far: those are **lost** (``StepState.lost``), so a late ``assigned`` or result of the gone
worker's delivery neither makes the step running nor decides it (a gone worker's result
that never said ``assigned`` carries the first number after the offset, and counts: the
step did run). The task then passes the gates as any offer does: placement picks another
live worker, or holds it (``LABELS``: no other worker has the labels it requires;
``STICKY``: a HARD sticky run's worker is gone, until its ``schedule_timeout``).

A SOFT sticky run whose worker went follows its moved task: the worker the moved task is
placed on becomes the run's worker (``dispatcher.folding``), so its later steps go there.

Once a move is folded the step's worker is the new one (or none: held, or the shared
queue), so a worker's loss moves each of its steps exactly once. Moves are looked for (a
scan of the runs in flight) only when a worker went or began stopping
(``Workers.departures``), and after a restart; and never before the registry has listened
``DEAD_AFTER_S`` (a process just started, its liveness stream unread: a worker not heard
yet is not a gone one).
"""

from __future__ import annotations

import datetime as dt

from dispatcher.decide import Output, queue_task
from dispatcher.state import RunState, State, StepState
from dispatcher.workers import Workers
from schemas import WorkerStatus
from schemas.messages import RunStatus

_IN_FLIGHT = (RunStatus.QUEUED, RunStatus.RUNNING)


def gone_from(workers: Workers, run: RunState, step: StepState, now: dt.datetime) -> bool:
    """Whether the step's task must move off the worker it was placed on (see above)."""
    if step.worker is None:
        return False
    worker = workers.get(run.scope, step.worker, now)
    if worker is None:
        return True
    stopping = worker.beat.status is not WorkerStatus.ACTIVE
    return stopping and step.status is RunStatus.QUEUED


def movable(run: RunState, step: StepState) -> bool:
    """Whether the step's attempt is out with a worker and not over."""
    return (
        step.worker is not None
        and step.status in _IN_FLIGHT
        and not step.held
        and step.waiting is None
        and not step.waiting_retry
        and step.resumed == len(step.wakes)  # no wake waiting to be offered
        and (step.on_failure or not run.failed_error)  # a failing run releases nothing more
    )


def move(run: RunState, step: StepState, now: dt.datetime) -> list[Output]:
    """The step's task, offered again: same attempt and wakes, one move more."""
    return queue_task(
        run,
        step,
        step.attempt,
        now,
        step.wakes,
        moves=step.moves + 1,
        moved_from=step.worker,
    )


def moves(state: State, now: dt.datetime) -> list[list[Output]]:
    """The moves the live workers call for now, one decision per step, by run and step
    (each to be folded, through the gates, before the next is made). None while the
    registry may not have heard every live worker yet (``Workers.settled``)."""
    if not state.workers.settled(now):
        return []
    return [
        move(run, step, now)
        for run in list(state.runs.values())
        if state.owns(run)
        for step in run.steps.values()
        if movable(run, step) and gone_from(state.workers, run, step, now)
    ]
