"""Placement (issue 15): which live worker a step's task goes to, when the step wants
labels or its run is sticky. Pure: a function of the live workers (``dispatcher.workers``,
an outside input like time) and of the run as the log has it; the choice is recorded in
the task itself (its subject and ``worker_id``), so replaying the log never places again.

- A step with neither desired labels nor a sticky run is not placed: its task goes to its
  workflow's shared queue, as always (:data:`SHARED`).
- Candidates are live workers that take directed tasks (``WorkerHeartbeat.directed``),
  registered the step, and satisfy every ``required`` label. A worker's score is the sum
  of the weights of the other desired labels it satisfies; the task goes to one of the
  best scored with a free slot, at random among equals (seeded by the task, so deciding it
  again picks the same worker, and equal workers share a workflow's runs evenly).
- No candidate at all: the step waits (:class:`Wait`, kind ``labels``) with a reason naming
  the labels; candidates all busy: it waits for a free slot. With only preferences and no
  worker taking directed tasks (workers of another SDK), it goes to the shared queue.
- Sticky: the run's worker is the first the run was placed on
  (``RunState.worker``). ``SOFT`` sends the step there when that worker is alive, fits and
  has a free slot, and places it as above otherwise (the shared queue when nothing can be
  placed). ``HARD`` sends it there or nowhere: it waits (kind ``sticky``) while the worker
  is busy or gone; its schedule timeout ends the wait. A sticky run's first step is placed
  as above (``HARD``: on a worker that takes directed tasks, so the run can stay there).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import attrs

from dispatcher.workers import LiveWorker
from schemas.labels import DesiredWorkerLabel, StickyStrategy


@attrs.frozen
class Shared:
    """Not placed: the workflow's shared queue."""


SHARED = Shared()


@attrs.frozen
class Placed:
    worker_id: str


@attrs.frozen
class Wait:
    """Not now: ``kind`` is ``labels`` or ``sticky``; ``reason`` is what ``runs get`` says."""

    kind: str
    reason: str


Placement = Shared | Placed | Wait


def fits(worker: LiveWorker, desired: Mapping[str, DesiredWorkerLabel]) -> bool:
    """Whether ``worker`` satisfies every required label of ``desired``."""
    return all(
        want.satisfied_by(worker.labels.get(key)) for key, want in desired.items() if want.required
    )


def score(worker: LiveWorker, desired: Mapping[str, DesiredWorkerLabel]) -> int:
    """The weights of the preferred (not required) labels ``worker`` satisfies."""
    return sum(
        want.weight
        for key, want in desired.items()
        if not want.required and want.satisfied_by(worker.labels.get(key))
    )


def _required(desired: Mapping[str, DesiredWorkerLabel]) -> str:
    return ", ".join(w.describe(k) for k, w in sorted(desired.items()) if w.required)


def _unsticky(workers: Sequence[LiveWorker], run_worker: str, busy: bool) -> str:
    """Why a HARD sticky step waits for its run's worker."""
    whose = f"worker {run_worker}, which the run's first step went to,"
    if busy:
        return f"{whose} has no free slot (sticky HARD)"
    if any(w.worker_id == run_worker for w in workers):
        return f"{whose} cannot take this step (sticky HARD)"
    return f"{whose} is gone (sticky HARD)"


def place(
    workers: Sequence[LiveWorker],
    workflow: str,
    step: str,
    desired: Mapping[str, DesiredWorkerLabel],
    sticky: StickyStrategy | None = None,
    run_worker: str | None = None,
    seed: str = "",
) -> Placement:
    """Where the task of ``workflow``'s ``step`` goes (see the module's docstring)."""
    if not desired and sticky is None:
        return SHARED
    able = [w for w in workers if w.directed and w.runs(workflow, step)]
    candidates = [w for w in able if fits(w, desired)]
    if sticky is not None and run_worker is not None:
        mine = next((w for w in candidates if w.worker_id == run_worker), None)
        if mine is not None and mine.free > 0:
            return Placed(mine.worker_id)
        if sticky is StickyStrategy.HARD:
            return Wait("sticky", _unsticky(workers, run_worker, mine is not None))
    required = _required(desired)
    if not candidates:
        if required:
            return Wait("labels", f"no live worker has {required}")
        if sticky is StickyStrategy.HARD:
            return Wait("sticky", "no live worker of this step takes directed tasks (sticky HARD)")
        return SHARED  # preferences only, and no worker to place on: anyone may take it
    free = [w for w in candidates if w.free > 0]
    if not free:
        if required:
            return Wait("labels", f"every live worker with {required} is busy")
        if sticky is StickyStrategy.SOFT and not desired:
            return SHARED
        return Wait(
            "labels" if desired else "sticky", "every live worker that could take it is busy"
        )
    best = max(score(w, desired) for w in free)
    top = [w for w in free if score(w, desired) == best]
    return Placed(random.Random(seed).choice(top).worker_id)
