"""The dispatcher's state: a fold of the log. Pure: no IO, no clocks."""

from __future__ import annotations

import datetime as dt
import functools
import heapq
from collections.abc import Callable
from typing import Any

import attrs

from dispatcher.crons import Triggers
from dispatcher.flowindex import FlowIndex
from dispatcher.groups import GroupId, Groups
from dispatcher.held import Holds
from dispatcher.matching import EventRoutes
from dispatcher.partition import WHOLE, Partition, coordinated
from dispatcher.waits import EventWaits, wake_at
from dispatcher.windows import Windows
from dispatcher.workers import Workers
from schemas.concurrency import ConcurrencyDef
from schemas.durable import StepWaiting, StepWoken
from schemas.filters import filter_error
from schemas.holds import HoldKind
from schemas.messages import (
    RunStatus,
    StepDef,
    WorkflowDef,
)
from schemas.ratelimits import RateLimitSet
from schemas.subjects import Scope


@attrs.define
class StepState:
    spec: StepDef
    on_failure: bool = False  # the run's on-failure step, outside the DAG
    on_success: bool = False  # the run's on-success step, outside the DAG, after it
    status: RunStatus | None = None  # None: waiting for its parents
    attempt: int = 0
    output: Any = None
    error: str | None = None
    queued_at: dt.datetime | None = None
    assigned: bool = False  # a worker took the current attempt (its assigned or result)
    delivery: int = 0  # the latest delivery of the current attempt a worker took
    handed_back: int = 0  # the latest delivery of it a worker handed back
    handed_back_at: dt.datetime | None = None
    retry_due: dt.datetime | None = None  # a retry is scheduled for then
    next_attempt: int = 0
    # A durable step (dispatcher.waits): the wait it is in (its worker gave the slot back),
    # the attempt's wakes so far, and how many of them its newest task carried.
    waiting: StepWaiting | None = None
    waiting_seq: int = 0  # the wait's stream sequence: only later events wake it
    wakes: tuple[StepWoken, ...] = ()
    resumed: int = 0
    # Held back by flow control (:mod:`dispatcher.holds`): what held the current attempt's
    # task (each kind once), for how many wakes (a durable step's task again), and the
    # latest reason. QUEUED meanwhile; cleared when its task is offered.
    held: tuple[HoldKind, ...] = ()
    held_wakes: int = 0
    held_reason: str | None = None
    # Placement (issue 15): the worker its current task was placed on (None: the shared
    # queue, or no task out); moved (:mod:`dispatcher.moved`): how many times that task
    # moved off a worker that went, the last one it moved off, and the deliveries it lost
    # (up to ``lost``: their late results count for nothing).
    worker: str | None = None
    moves: int = 0
    moved_from: str | None = None
    lost: int = 0

    def settle_deliveries(self) -> None:
        """RUNNING while a delivery newer than any handed back runs; back in the queue when
        the newest delivery was handed back. Built from maxima only (``queued_at`` stays the
        time it was queued), so the order in which assignments and hand-backs are folded
        does not matter."""
        if self.delivery > self.handed_back:
            self.status, self.assigned = RunStatus.RUNNING, True
        elif self.handed_back:
            self.status, self.assigned = RunStatus.QUEUED, False

    @property
    def waiting_since(self) -> dt.datetime | None:
        """Since when the step waits in the queue: its schedule timeout runs from the hand
        back of its newest delivery, if there was one, else from when it was queued."""
        if self.handed_back and self.handed_back_at is not None:
            return self.handed_back_at
        return self.queued_at

    @property
    def terminal(self) -> bool:
        return self.status is not None and self.status.terminal

    @property
    def waiting_retry(self) -> bool:
        return self.retry_due is not None


@attrs.define
class RunState:
    scope: Scope
    run_id: str
    workflow: str
    workflow_version: str
    input: Any
    steps: dict[str, StepState]
    schedule_timeout_s: float = 300.0
    failed_error: str | None = None  # set once a step failed for good
    # A child run's parent (its ``created`` has a CHILD trigger); a parent's children still
    # in flight, in the order they were created (a dict as an ordered set: a fan-out of
    # thousands unlinks each child in O(1)) (``dispatcher.children``).
    parent: str | None = None
    children: dict[str, None] = attrs.Factory(dict)
    # A run of a workflow with concurrency (:mod:`schemas.concurrency`): its key, and
    # whether it was admitted (its first tasks offered); a run without a key always is.
    concurrency: ConcurrencyDef | None = None
    key: str | None = None
    admitted: bool = True
    # The run's additional metadata (dynamic rate-limit keys read it, as CEL does).
    metadata: dict[str, str] = attrs.Factory(dict)
    # The worker the run's first placed task went to: where a sticky run's steps go
    # (:mod:`dispatcher.placement`; a sticky run's tasks are all placed when they can be).
    worker: str | None = None
    # Its priority (1..3, :mod:`schemas.priority`), None when it has none.
    priority: int | None = None
    # The key of each of its steps that has its own concurrency (fixed at creation).
    step_keys: dict[str, str] = attrs.Factory(dict)

    @property
    def group(self) -> GroupId | None:
        """Its concurrency group, if it has a key."""
        if self.concurrency is None or self.key is None:
            return None
        return (self.scope, self.workflow, self.key)

    def dag(self) -> list[StepState]:
        return [s for s in self.steps.values() if not s.on_failure and not s.on_success]

    def failure_step(self) -> StepState | None:
        return next((s for s in self.steps.values() if s.on_failure), None)

    def success_step(self) -> StepState | None:
        return next((s for s in self.steps.values() if s.on_success), None)

    def children_of(self, name: str) -> list[StepState]:
        return [s for s in self.dag() if name in s.spec.parents]

    def ready(self, step: StepState) -> bool:
        return (
            not step.on_failure
            and not step.on_success
            and step.status is None
            and all(self.steps[p].status is RunStatus.SUCCEEDED for p in step.spec.parents)
        )

    def step_errors(self) -> dict[str, str]:
        """Why each step failed (the on-success step's too), for the on-failure step."""
        return {
            s.spec.name: s.error or ""
            for s in self.steps.values()
            if not s.on_failure and s.status is RunStatus.FAILED
        }


# (when, run id, step name): a step's retry comes due, or its wait in the queue times out.
Deadline = tuple[dt.datetime, str, str]

# The deadline heap drops the entries of runs over once it holds this many more than twice
# what it kept the last time.
_DEADLINES_SLACK = 1024


@attrs.define
class State:
    """Registered workflows, runs in flight, and the ids of runs that are over.

    ``deadlines`` indexes the runs for ``decide.due`` (an index, not state: it takes no part
    in equality, and a snapshot does not store it): a min-heap holding, for every step whose
    retry may come due or whose wait in the queue may time out, an entry at exactly that
    moment (:func:`deadlines_of`). Entries are lazy: one whose step has since moved on (was
    picked up, finished, its run ended) stays until it is popped, and then decides
    nothing."""

    workflows: dict[tuple[Scope, str], WorkflowDef] = attrs.Factory(dict)
    runs: dict[str, RunState] = attrs.Factory(dict)
    done: set[str] = attrs.Factory(set)
    # Crons and scheduled runs (``dispatcher.crons``).
    triggers: Triggers = attrs.Factory(Triggers)
    # Static rate limits, the latest ``ratelimits.<key>`` of each (``dispatcher.ratelimits``).
    rate_limits: dict[tuple[Scope, str], RateLimitSet] = attrs.Factory(dict)
    # What rate limits' offered tasks took, by limit (folded from tasks; in snapshots).
    windows: Windows = attrs.field(factory=Windows, eq=False, repr=False)
    deadlines: list[Deadline] = attrs.field(init=False, factory=list, eq=False, repr=False)
    # Drop stale entries from ``deadlines`` when it grows past this (see ``watch``).
    deadlines_cap: int = attrs.field(init=False, default=_DEADLINES_SLACK, eq=False, repr=False)
    # The workflows' ``on_events`` indexed (an index: rebuilt after the registry changes).
    _routes: EventRoutes | None = attrs.field(init=False, default=None, eq=False, repr=False)
    # The durable steps waiting for events, by scope (an index, like ``deadlines``).
    event_waits: EventWaits = attrs.field(init=False, factory=EventWaits, eq=False, repr=False)
    # The runs of each concurrency key, admitted or waiting (an index, like ``deadlines``).
    groups: Groups = attrs.field(init=False, factory=Groups, eq=False, repr=False)
    # The tasks held back, in memory (an index: the log holds each step's ``held``, and
    # ``complete`` makes the tasks again after a restart).
    holds: Holds = attrs.field(init=False, factory=Holds, eq=False, repr=False)
    # The live workers, from their heartbeats (:mod:`dispatcher.workers`): an outside input,
    # like time, never folded from the log nor snapshotted; the service keeps one registry
    # across restarts of its state and sets it here. Placement reads it.
    workers: Workers = attrs.field(init=False, factory=Workers, eq=False, repr=False)
    # What priority and step concurrency count (``dispatcher.flowindex``; an index).
    flow: FlowIndex = attrs.field(init=False, factory=FlowIndex, eq=False, repr=False)
    # How many tasks of a workflow its live workers can run at once (the service's registry
    # of workers, ``dispatcher.workers``): an outside input, like time; None: not known
    # (then priority holds nothing back).
    capacity: Callable[[Scope, str, dt.datetime], int] | None = attrs.field(
        init=False, default=None, eq=False, repr=False
    )
    # Which partition of the tenant's dispatch this state decides for
    # (:mod:`dispatcher.partition`): it folds every run, and decides for those it owns. Set
    # by the service, like ``workers``; the whole tenant unless it is partitioned.
    partition: Partition = attrs.field(init=False, default=WHOLE, eq=False, repr=False)

    @property
    def routes(self) -> EventRoutes:
        if self._routes is None:
            self._routes = EventRoutes(self.workflows.items())
        return self._routes

    def register(self, scope: Scope, wf: WorkflowDef) -> bool:
        """Make ``wf`` its workflow's newest definition, unless its event filter does not
        compile (then the registration is ignored: False)."""
        if filter_error(wf.event_filter) is not None:
            return False
        self.workflows[(scope, wf.name)] = wf
        self._routes = None
        return True

    def known(self, run_id: str) -> bool:
        return run_id in self.runs or run_id in self.done

    def owns(self, run: RunState) -> bool:
        """Whether this state's partition decides for ``run``."""
        part = self.partition
        return part.whole or part.owns(run.run_id, run_coordinated(run))

    def owns_new(self, run_id: str, wf: WorkflowDef, priority: int | None) -> bool:
        """Whether this partition creates (and owns) the run ``run_id`` of ``wf`` with the
        trigger's ``priority``: the same answer :meth:`owns` gives once it is folded."""
        part = self.partition
        if part.whole:
            return True
        if priority is None:
            priority = wf.default_priority
        steps = [wf.on_failure, wf.on_success, *wf.steps]
        return part.owns(
            run_id, coordinated(wf.concurrency, priority, [s for s in steps if s is not None])
        )

    def run(self, scope: Scope, run_id: str) -> RunState | None:
        """The run in flight with that id, if it belongs to ``scope``: a message on another
        namespace's subject never touches it."""
        run = self.runs.get(run_id)
        return run if run is not None and run.scope == scope else None


def run_coordinated(run: RunState) -> bool:
    """Whether the run uses flow control across runs (``dispatcher.partition``): from what
    its ``created`` fixed, as :meth:`State.owns_new` reads it from the workflow."""
    return coordinated(run.concurrency, run.priority, (s.spec for s in run.steps.values()))


def deadlines_of(run: RunState, step: StepState) -> list[dt.datetime]:
    """When the step's scheduled retry may be queued (not while its run is failing: a
    failing run releases nothing more), when the step, queued and held by no worker, has
    waited ``schedule_timeout_s``, and when the durable wait it is in sleeps until: those
    it has now."""
    out = []
    if step.retry_due is not None and not step.terminal and not run.failed_error:
        out.append(step.retry_due)
    if step.waiting is not None and not step.terminal and not run.failed_error:
        when = wake_at(step.waiting)
        if when is not None:
            out.append(when)
    if step.status is RunStatus.QUEUED and not step.assigned:
        since = step.waiting_since
        if since is not None:
            out.append(timed_out_at(since, run.schedule_timeout_s))
    return out


def timed_out_at(since: dt.datetime, timeout_s: float) -> dt.datetime:
    """``since - timedelta(seconds=-timeout_s)``, on purpose: ``due`` tests ``since <= now +
    timedelta(seconds=-timeout_s)``, and datetime arithmetic is exact (whole microseconds),
    so this moment is ``<= now`` exactly when that test holds."""
    return since - _backwards(timeout_s)


@functools.lru_cache(maxsize=256)
def _backwards(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=-seconds)  # made from a float: worth the cache


def watch(state: State, run_id: str, step: StepState) -> None:
    """Index the step's deadlines (of run ``run_id``, in flight) as they are now: an earlier
    entry of the step goes stale. Only a run this partition owns: another's deadlines
    are its owner's to meet."""
    run = state.runs[run_id]
    if not state.owns(run):
        return
    for when in deadlines_of(run, step):
        heapq.heappush(state.deadlines, (when, run_id, step.spec.name))
    if len(state.deadlines) > state.deadlines_cap:
        _compact(state)


def _compact(state: State) -> None:
    """Drop the entries of runs no longer in flight: the stale entries that pile up (runs
    over long before their deadlines; those of a run in flight are bounded by what it
    folded). One cheap pass; the cap is then twice what is left, so this costs O(1)
    amortized per entry pushed."""
    runs = state.runs
    state.deadlines[:] = [entry for entry in state.deadlines if entry[1] in runs]
    heapq.heapify(state.deadlines)
    state.deadlines_cap = 2 * len(state.deadlines) + _DEADLINES_SLACK


def index_deadlines(state: State) -> None:
    """Build ``state.deadlines`` from the runs in flight, for a state not made by folding
    (a snapshot loaded): one pass, no stale entries."""
    state.deadlines[:] = [
        (when, run.run_id, name)
        for run in state.runs.values()
        if state.owns(run)
        for name, step in run.steps.items()
        for when in deadlines_of(run, step)
    ]
    heapq.heapify(state.deadlines)
    state.deadlines_cap = 2 * len(state.deadlines) + _DEADLINES_SLACK
    state.event_waits.clear()
    state.groups.clear()
    state.holds.clear()
    state.flow.clear()
    for run in state.runs.values():
        if run.group is not None:
            state.groups.add(run.group, run.run_id, run.admitted)
        if run.priority is not None or run.step_keys:
            state.flow.index(run)
        for name, step in run.steps.items():
            if step.waiting is not None and not step.terminal:
                state.event_waits.add(run.scope, run.run_id, name)
