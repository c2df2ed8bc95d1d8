"""Wire types: one frozen attrs class per message kind.

Every message body is a JSON object carrying ``"v"`` (its schema version). Decoders ignore
unknown fields, so a newer writer never breaks an older reader; an older version is upcast
in :mod:`schemas.codec`. Timestamps are ISO-8601 UTC strings written by whoever appends the
message, so a projection rebuilt from the log comes out identical.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from schemas.concurrency import ConcurrencyDef
from schemas.durable import StepWaiting, StepWoken, wakes
from schemas.holds import StepHeld
from schemas.labels import (
    DesiredWorkerLabel,
    LabelValue,
    StickyStrategy,
    desired_labels,
    label_map,
    opt_sticky,
)
from schemas.ratelimits import RateLimitDef, RateLimitUse, rate_limit_defs, rate_limit_uses
from schemas.structure import structure, utcnow


class RunStatus(enum.StrEnum):
    """A run's status, and a step's (a step is QUEUED, RUNNING, then a terminal one)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _str_map(value: Mapping[str, str] | None) -> dict[str, str]:
    """Additional metadata: a JSON object of strings (TypeError otherwise: a body with
    another shape is refused by the codec)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("additional_metadata must be an object of string values")
    return dict(value)


def _tuple_of_int(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _opt_concurrency(value: ConcurrencyDef | Mapping[str, Any] | None) -> ConcurrencyDef | None:
    if value is None or isinstance(value, ConcurrencyDef):
        return value
    return structure(ConcurrencyDef, value)


@attrs.frozen
class StepDef:
    name: str
    parents: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    timeout_s: float = 60.0
    retries: int = 0
    backoff_factor: float | None = None
    backoff_max_s: float | None = None
    # The rate limits a run of the step takes units of (:mod:`schemas.ratelimits`); hashed
    # into the workflow's version only when there are some.
    rate_limits: tuple[RateLimitDef, ...] = attrs.field(default=(), converter=rate_limit_defs)
    # What the step wants of its worker's labels (:mod:`schemas.labels`); hashed into the
    # workflow's version only when not empty.
    desired_worker_labels: dict[str, DesiredWorkerLabel] = attrs.field(
        factory=dict, converter=desired_labels
    )
    # At most ``max_runs`` tasks of this step in flight per key (issue 15): the key is the
    # CEL expression evaluated on the run's input and metadata. Hashed only when set.
    concurrency: ConcurrencyDef | None = attrs.field(default=None, converter=_opt_concurrency)


def _step_defs(value: Iterable[StepDef | Mapping[str, Any]]) -> tuple[StepDef, ...]:
    return tuple(v if isinstance(v, StepDef) else structure(StepDef, v) for v in value)


def _opt_step_def(value: StepDef | Mapping[str, Any] | None) -> StepDef | None:
    if value is None or isinstance(value, StepDef):
        return value
    return structure(StepDef, value)


@attrs.frozen
class WorkflowDef:
    """``<t>.<ns>.workflows.<name>``: what a worker registers. ``version`` hashes the rest."""

    KIND = "workflow"
    name: str
    version: str
    steps: tuple[StepDef, ...] = attrs.field(converter=_step_defs)
    on_events: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    # Runs when the run fails (``@hatchet.on_failure_step()``); not part of the DAG.
    on_failure: StepDef | None = attrs.field(default=None, converter=_opt_step_def)
    schedule_timeout_s: float = 300.0
    registered_at: str = attrs.field(factory=utcnow)
    v: int = 1
    # Runs once every step of the DAG succeeded, before the run is SUCCEEDED
    # (``@hatchet.on_success_step()``); its failure fails the run. Not part of the DAG.
    on_success: StepDef | None = attrs.field(default=None, converter=_opt_step_def)
    # A CEL expression over ``input``, ``additional_metadata`` and ``event_key``: an event
    # of ``on_events`` starts a run only when it is true (:mod:`schemas.filters`).
    event_filter: str | None = None
    # At most ``max_runs`` runs in flight per concurrency key (:mod:`schemas.concurrency`).
    concurrency: ConcurrencyDef | None = attrs.field(default=None, converter=_opt_concurrency)
    # Keep a run's steps on the worker that ran its first step (:mod:`schemas.labels`).
    sticky: StickyStrategy | None = attrs.field(default=None, converter=opt_sticky)
    # The priority (1 low .. 3 high, :mod:`schemas.priority`) of a run not given one by its
    # trigger; None: the workflow does not use priority (its tasks are never held back).
    default_priority: int | None = None

    def step(self, name: str) -> StepDef:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


class TriggerKind(enum.StrEnum):
    EVENT = "event"  # an event whose key the workflow listens to
    REPLAY = "replay"  # a re-run of an earlier run (``natchet runs replay``)
    CRON = "cron"  # a fire of a cron (``cron``: its name; ``fire_at``: the tick)
    SCHEDULE = "schedule"  # a scheduled run (``schedule_id``; ``fire_at``: when it was due)
    CHILD = "child"  # spawned by a step (``run_id``: the parent; ``step``; ``key``)


@attrs.frozen
class Trigger:
    """What started a run, when it was not a plain request (``RunCreated.trigger``).

    An event names its key and id (its stream sequence); a replay names the run it re-runs
    and the step it re-runs from (None: the whole run); a cron its name and the tick it
    fired for; a scheduled run its schedule and when it was due; a child run its parent
    (``run_id``), the parent's step and the key that makes spawning it idempotent. Version
    1 of ``created`` had only events, as ``triggered_by: {event_key, event_id}`` (upcast in
    :mod:`schemas.codec`)."""

    kind: TriggerKind = attrs.field(converter=TriggerKind)
    event_key: str | None = None
    event_id: str | None = None
    run_id: str | None = None
    from_step: str | None = None
    cron: str | None = None
    schedule_id: str | None = None
    fire_at: str | None = None
    step: str | None = None
    key: str | None = None

    @classmethod
    def of_event(cls, event_key: str, event_id: str) -> Trigger:
        return cls(TriggerKind.EVENT, event_key=event_key, event_id=event_id)

    @classmethod
    def of_replay(cls, run_id: str, from_step: str | None) -> Trigger:
        return cls(TriggerKind.REPLAY, run_id=run_id, from_step=from_step)


def _trigger(value: Trigger | Mapping[str, Any] | None) -> Trigger | None:
    if value is None or isinstance(value, Trigger):
        return value
    return structure(Trigger, value)


@attrs.frozen
class RunRequested:
    """``runs.<id>.requested``: a client asks for a run of a workflow by name."""

    KIND = "requested"
    run_id: str
    workflow: str
    input: Any
    requested_at: str = attrs.field(factory=utcnow)
    # A re-run of run ``replay_of`` (same namespace), from step ``from_step`` (None: all of
    # it). The dispatcher reads that run from the log: ``workflow`` and ``input`` are its.
    replay_of: str | None = None
    from_step: str | None = None
    # A child run (kind CHILD): the parent run, its step and the spawn's key. The run id
    # must be :func:`schemas.children.child_run_id` of them; the dispatcher checks the
    # parent is in flight in this namespace, else rejects the request.
    trigger: Trigger | None = attrs.field(default=None, converter=_trigger)
    v: int = 1
    # Key-value strings the run carries (Hatchet's ``additional_metadata``), copied onto it.
    additional_metadata: dict[str, str] = attrs.field(factory=dict, converter=_str_map)
    # The run's priority (1..3, :mod:`schemas.priority`); None: its workflow's default.
    priority: int | None = None

    @classmethod
    def of_replay(cls, run_id: str, replay_of: str, from_step: str | None) -> RunRequested:
        """Run ``run_id`` as a replay of ``replay_of`` (from ``from_step``)."""
        return cls(run_id, "", None, replay_of=replay_of, from_step=from_step)


@attrs.frozen
class RunCreated:
    """``runs.<id>.created``: the dispatcher accepted a run, with the DAG it will follow.

    ``trigger`` says what started it (None: a request). A replay from a step carries in
    ``kept`` the outputs of the steps it does not run again, taken from the run it replays
    (they start SUCCEEDED). Version 2: ``trigger`` replaced v1's ``triggered_by``."""

    KIND = "created"
    run_id: str
    workflow: str
    workflow_version: str
    input: Any
    steps: tuple[StepDef, ...] = attrs.field(converter=_step_defs)
    trigger: Trigger | None = attrs.field(default=None, converter=_trigger)
    created_at: str = attrs.field(factory=utcnow)
    on_failure: StepDef | None = attrs.field(default=None, converter=_opt_step_def)
    schedule_timeout_s: float = 300.0
    kept: dict[str, Any] = attrs.Factory(dict)
    v: int = 2
    on_success: StepDef | None = attrs.field(default=None, converter=_opt_step_def)
    # The request's or the event's additional metadata (key-value strings).
    additional_metadata: dict[str, str] = attrs.field(factory=dict, converter=_str_map)
    # The workflow's concurrency and this run's key (:mod:`schemas.concurrency`): the run
    # is admitted (its first tasks offered) only while its key has room.
    concurrency: ConcurrencyDef | None = attrs.field(default=None, converter=_opt_concurrency)
    concurrency_key: str | None = None
    # The run's priority (1..3): its trigger's, else its workflow's ``default_priority``;
    # None when neither has one (the run is not windowed, :mod:`dispatcher.priority`).
    priority: int | None = None


@attrs.frozen
class RunRejected:
    """``runs.<id>.rejected``: a requested run that could not be created, and why."""

    KIND = "rejected"
    run_id: str
    workflow: str
    reason: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class StepQueued:
    """``runs.<id>.queued``: a step attempt became ready and was offered to workers."""

    KIND = "queued"
    run_id: str
    step: str
    attempt: int
    queued_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class Task:
    """``tasks.<workflow>.<step>``: the offer a worker pulls from the shared consumer (or
    ``tasks.~direct.<worker_id>.<workflow>.<step>``: placed on that worker)."""

    KIND = "task"
    run_id: str
    workflow: str
    step: str
    attempt: int
    input: Any
    parent_outputs: dict[str, Any]
    timeout_s: float
    queued_at: str = attrs.field(factory=utcnow)
    workflow_version: str = ""
    # For an on-failure step: the error of each step that failed.
    step_errors: dict[str, str] = attrs.Factory(dict)
    # A worker that gets the task after this (ISO time) drops it: the step already timed out.
    schedule_deadline: str | None = None
    v: int = 1
    # A durable step queued again after a wait (:mod:`schemas.durable`): every wake of the
    # attempt so far, in order; the worker reports delivery ``delivery_offset`` + the
    # task's own delivery count (the attempt's deliveries before this task).
    wakes: tuple[StepWoken, ...] = attrs.field(default=(), converter=wakes)
    delivery_offset: int = 0
    # What offering it took of rate limits (:mod:`schemas.ratelimits`): workers ignore it.
    rate_limits: tuple[RateLimitUse, ...] = attrs.field(default=(), converter=rate_limit_uses)
    # Placed on one worker (issue 15, :mod:`dispatcher.placement`): the task's subject is
    # then ``tasks.~direct.<worker_id>.<workflow>.<step>``, which only it reads.
    worker_id: str | None = None
    # Its run's priority (1..3), None when the run has none.
    priority: int | None = None
    # Moved (``dispatcher.moved``): the attempt's task offered again because the worker it
    # was placed on went (dead, or stopping) before the step ended: how many times this
    # task of the attempt (after its ``wakes``) was moved, and the worker it moved off.
    # Deliveries up to ``delivery_offset`` are lost: their late results count for nothing.
    moves: int = 0
    moved_from: str | None = None


@attrs.frozen
class StepAssigned:
    """``runs.<id>.assigned``: a worker took a step attempt. ``delivery`` counts redeliveries."""

    KIND = "assigned"
    run_id: str
    step: str
    attempt: int
    delivery: int
    worker_id: str
    worker_name: str
    started_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class StepLog:
    """``runs.<id>.log``: one line a step wrote with ``context.log``."""

    KIND = "log"
    run_id: str
    step: str
    attempt: int
    delivery: int
    line: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class StepResult:
    """``runs.<id>.result``: what a worker's attempt returned (``ok``) or raised.

    It also carries the attempt's assignment (``worker_name``, ``started_at``): a worker
    appends ``assigned`` only for a step still running after a short grace, so the result of
    a fast step is the only record of who ran it and when it started. Results written before
    these fields existed have ``started_at`` None (and an ``assigned`` before them)."""

    KIND = "result"
    run_id: str
    step: str
    attempt: int
    delivery: int
    worker_id: str
    ok: bool
    output: Any = None
    error: str | None = None
    finished_at: str = attrs.field(factory=utcnow)
    # The step raised NonRetryableError: fail now, whatever retries are left.
    non_retryable: bool = False
    # The worker gave the task back unfinished (graceful shutdown); another delivery follows.
    handed_back: bool = False
    # The assignment, as ``assigned`` would record it (the same values when both exist).
    worker_name: str = ""
    started_at: str | None = None
    # Where a failing step raised (Python's traceback, the last TRACEBACK_CHARS of it).
    traceback: str | None = None
    v: int = 1


@attrs.frozen
class StepRetryScheduled:
    """``runs.<id>.retry_scheduled``: attempt ``attempt`` failed; ``next_attempt`` is due at
    ``due_at``. The dispatcher re-arms the timer from this message after a restart."""

    KIND = "retry_scheduled"
    run_id: str
    step: str
    attempt: int
    next_attempt: int
    due_at: str
    error: str | None = None
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class RunCancelRequested:
    """``runs.<id>.cancel_requested``: a client asks to cancel the run."""

    KIND = "cancel_requested"
    run_id: str
    reason: str | None = None
    requested_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class StepFinished:
    """``runs.<id>.step_finished``: the dispatcher's verdict on a step (once per step)."""

    KIND = "step_finished"
    run_id: str
    step: str
    attempt: int
    delivery: int
    status: RunStatus = attrs.field(converter=RunStatus)
    output: Any = None
    error: str | None = None
    at: str = attrs.field(factory=utcnow)
    v: int = 1


def _step_verdicts(value: Iterable[StepFinished | Mapping[str, Any]]) -> tuple[StepFinished, ...]:
    return tuple(v if isinstance(v, StepFinished) else structure(StepFinished, v) for v in value)


@attrs.frozen
class RunFinished:
    """``runs.<id>.finished``: the run reached a terminal status (once per run).

    ``steps`` are the step verdicts decided with the run's end (the last step's, and those
    of the steps the end cancels), in order, taking effect before the run's own: one
    message where there were one per verdict and one for the run (issue 9: a one-step run
    is a message shorter). Older logs have them as ``step_finished`` messages before it."""

    KIND = "finished"
    run_id: str
    status: RunStatus = attrs.field(converter=RunStatus)
    error: str | None = None
    at: str = attrs.field(factory=utcnow)
    steps: tuple[StepFinished, ...] = attrs.field(default=(), converter=_step_verdicts)
    v: int = 1


RunMessage = (
    RunRequested
    | RunCancelRequested
    | StepRetryScheduled
    | RunCreated
    | RunRejected
    | StepQueued
    | StepAssigned
    | StepLog
    | StepResult
    | StepFinished
    | RunFinished
    | StepWaiting
    | StepWoken
    | StepHeld
)

RUN_KINDS: dict[str, type[RunMessage]] = {
    cls.KIND: cls
    for cls in (
        RunRequested,
        RunCancelRequested,
        StepRetryScheduled,
        RunCreated,
        RunRejected,
        StepQueued,
        StepAssigned,
        StepLog,
        StepResult,
        StepFinished,
        RunFinished,
        StepWaiting,
        StepWoken,
        StepHeld,
    )
}


class WorkerStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


@attrs.frozen
class WorkerHeartbeat:
    """``<t>.<ns>.workers.<worker_id>``: a worker is alive (sent with a message TTL)."""

    KIND = "heartbeat"
    worker_id: str
    name: str
    actions: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    slots: int
    running: int
    status: WorkerStatus = attrs.field(converter=WorkerStatus)
    started_at: str
    at: str = attrs.field(factory=utcnow)
    # What the worker runs (issue 11): its SDK's release and the wire protocol it speaks
    # (:mod:`schemas.protocol`). Heartbeats from before have "" and 0 (protocol 1).
    sdk_version: str = ""
    protocol: int = 0
    v: int = 1
    # Issue 15: what the worker says about itself (:mod:`schemas.labels`), matched against
    # steps' desired labels; and whether it reads its own directed consumer
    # (``<t>.<ns>.tasks._direct.<worker_id>.>``), so the engine may place a task on it.
    # A worker that does not say so (an older SDK) is never sent a directed task.
    labels: dict[str, LabelValue] = attrs.field(factory=dict, converter=label_map)
    directed: bool = False


@attrs.frozen
class WorkerRefused:
    """``<t>.<ns>.workers.<worker_id>.refused``: the engine will not serve this worker (a
    wire protocol it cannot serve); ``reason`` says which protocols it accepts. Published,
    not stored: the engine says it again at each heartbeat of that worker."""

    KIND = "refused"
    worker_id: str
    reason: str
    protocol: int
    accepted: tuple[int, ...] = attrs.field(converter=_tuple_of_int)
    engine_version: str = ""
    at: str = attrs.field(factory=utcnow)
    v: int = 1


# Crons and scheduled runs (issue 14; docs/triggers.md). A client appends ``created`` and
# ``deleted``; the dispatcher answers with ``armed`` (the next fire it set a timer for),
# ``fired`` (a tick started its run) or ``rejected`` (a record it cannot use).


@attrs.frozen
class CronCreated:
    """``<t>.<ns>.crons.<name>.created``: run ``workflow`` with ``input`` at each tick of
    ``expression`` (cron: 5 fields, or 6 with seconds first), in ``timezone`` (an IANA
    name; None: UTC). ``id`` (the client's, unique) tells this cron from an earlier one of
    the same name, which it replaces."""

    KIND = "created"
    id: str
    name: str
    workflow: str
    expression: str
    input: Any = None
    timezone: str | None = None
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class CronDeleted:
    """``<t>.<ns>.crons.<name>.deleted``: the cron fires no more."""

    KIND = "deleted"
    name: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class CronArmed:
    """``<t>.<ns>.crons.<name>.armed``: the dispatcher set the cron's (``id``) next fire,
    at ``fire_at``; its timer is a message schedule in the ``schedules-<t>`` stream."""

    KIND = "armed"
    name: str
    id: str
    fire_at: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class CronFired:
    """``<t>.<ns>.crons.<name>.fired``: the tick ``fire_at`` of cron ``id`` started run
    ``run_id`` (its ``created`` or ``rejected`` comes just before)."""

    KIND = "fired"
    name: str
    id: str
    fire_at: str
    run_id: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class CronRejected:
    """``<t>.<ns>.crons.<name>.rejected``: a ``created`` the dispatcher cannot use (a bad
    expression, timezone or workflow name), and why. The cron does not exist."""

    KIND = "rejected"
    name: str
    id: str
    reason: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class ScheduleCreated:
    """``<t>.<ns>.schedules.<schedule_id>.created``: run ``workflow`` with ``input`` once,
    at ``trigger_at`` (ISO 8601 with an offset)."""

    KIND = "created"
    schedule_id: str
    workflow: str
    trigger_at: str
    input: Any = None
    created_at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class ScheduleDeleted:
    """``<t>.<ns>.schedules.<schedule_id>.deleted``: the scheduled run will not happen
    (if it has not yet)."""

    KIND = "deleted"
    schedule_id: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class ScheduleFired:
    """``<t>.<ns>.schedules.<schedule_id>.fired``: its time came and it started run
    ``run_id`` (whose ``created`` or ``rejected`` comes just before)."""

    KIND = "fired"
    schedule_id: str
    run_id: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class ScheduleRejected:
    """``<t>.<ns>.schedules.<schedule_id>.rejected``: a ``created`` the dispatcher cannot
    use (a time that does not parse, a bad workflow name), and why."""

    KIND = "rejected"
    schedule_id: str
    reason: str
    at: str = attrs.field(factory=utcnow)
    v: int = 1


CronMessage = CronCreated | CronDeleted | CronArmed | CronFired | CronRejected
ScheduleMessage = ScheduleCreated | ScheduleDeleted | ScheduleFired | ScheduleRejected

CRON_KINDS: dict[str, type[CronMessage]] = {
    cls.KIND: cls for cls in (CronCreated, CronDeleted, CronArmed, CronFired, CronRejected)
}
SCHEDULE_KINDS: dict[str, type[ScheduleMessage]] = {
    cls.KIND: cls for cls in (ScheduleCreated, ScheduleDeleted, ScheduleFired, ScheduleRejected)
}


@attrs.frozen
class TimerFired:
    """``<t>.<ns>.fires.<cron|schedule>.<name>`` in the ``schedules-<t>`` stream (not the
    log): what the server stores when a timer the dispatcher set comes due. Engine only."""

    KIND = "timer"
    kind: str  # cron | schedule
    name: str  # the cron's name, or the schedule's id
    id: str  # the cron's id (a schedule: its id again)
    fire_at: str
    v: int = 1
