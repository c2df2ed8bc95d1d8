"""The operations a log record asks of the read model, checked and ready to store.

:func:`projector.plan.plan` turns a record into these; :class:`projector.fold.Fold`
applies them to rows. Every value here already passed :mod:`projector._values`: texts
carry no NUL, JSON values are JSON text (``None`` is SQL ``NULL``, ``"null"`` JSON null),
``text[]`` values are Postgres array literals, times are aware datetimes. ``seq`` is the
stream sequence of the record the operation comes from.
"""

from __future__ import annotations

import datetime as dt

import attrs

LOST = "no result: the task was redelivered to another worker (worker presumed dead)"
HANDED_BACK = "handed back: the worker shut down before finishing"
RUN_ENDED = "the run ended before this attempt reported"
MOVED = "no result: its worker went, and the task was moved (offered again)"


@attrs.frozen
class Event:
    seq: int
    namespace: str
    key: str
    payload: str | None  # None when the body is not valid JSON
    raw: str | None  # the body as text when it is not
    valid: bool
    received_at: dt.datetime | None
    replay_of: int | None = None  # an event published again: the sequence it repeats
    additional_metadata: str | None = None  # JSON text: its Natchet-Meta-* headers


@attrs.frozen
class Workflow:
    seq: int
    namespace: str
    name: str
    version: str
    definition: str
    on_events: str
    registered_at: dt.datetime


@attrs.frozen
class Rejection:
    seq: int
    subject: str
    reason: str
    at: dt.datetime | None


@attrs.frozen
class NewStep:
    name: str
    parents: str
    on_failure: bool
    kept: str | None = None  # a replay's step carried over: its output (JSON), SUCCEEDED
    on_success: bool = False  # the run's on-success step, outside the DAG, after it


@attrs.frozen
class Created:
    seq: int
    run_id: str
    namespace: str
    workflow: str
    workflow_version: str
    input: str
    event_key: str | None
    event_id: str | None
    created_at: dt.datetime
    steps: tuple[NewStep, ...]
    replay_of: str | None = None
    replay_from_step: str | None = None
    parent_run_id: str | None = None  # a child run (issue 14): its parent, step and key
    parent_step: str | None = None
    child_key: str | None = None
    additional_metadata: str | None = None  # JSON text of an object of strings
    cron: str | None = None
    schedule_id: str | None = None
    fire_at: dt.datetime | None = None
    concurrency_key: str | None = None  # its key (issue 15), and its workflow's
    concurrency: str | None = None  # concurrency as JSON text: expression, max_runs, strategy
    priority: int | None = None  # 1..3 (issue 15); None: the run has none


@attrs.frozen
class Rejected:
    seq: int
    run_id: str
    namespace: str
    workflow: str
    reason: str
    at: dt.datetime


@attrs.frozen
class CancelRequested:
    seq: int
    run_id: str
    at: dt.datetime
    reason: str | None


@attrs.frozen
class Finished:
    seq: int
    run_id: str
    status: str
    terminal: bool
    error: str | None
    at: dt.datetime


@attrs.frozen
class Queued:
    """A step queued: from a ``queued`` message, or from the task itself."""

    seq: int
    run_id: str
    step: str
    attempt: int
    at: dt.datetime
    # A moved task (``Task.moved_from``): the worker it moved off, whose delivery is lost.
    moved_from: str | None = None


@attrs.frozen
class RetryScheduled:
    seq: int
    run_id: str
    step: str
    next_attempt: int
    due_at: dt.datetime
    error: str | None


@attrs.frozen
class StepFinished:
    seq: int
    run_id: str
    step: str
    attempt: int  # 0: the step was never queued
    status: str
    output: str | None
    error: str | None
    at: dt.datetime


@attrs.frozen
class Assigned:
    seq: int
    run_id: str
    step: str
    attempt: int
    delivery: int
    worker_id: str
    worker_name: str
    at: dt.datetime


@attrs.frozen
class Result:
    """A worker's result. With ``started_at`` it also carries its delivery's assignment (a
    fast step's worker appends no ``assigned``): applied as that assignment, then as the
    result. Results written before they carried it have ``started_at`` None."""

    seq: int
    run_id: str
    step: str
    attempt: int
    delivery: int
    worker_id: str
    status: str
    at: dt.datetime
    error: str | None
    output: str | None
    handed_back: bool
    worker_name: str | None = None
    started_at: dt.datetime | None = None


@attrs.frozen
class Log:
    seq: int
    run_id: str
    step: str
    attempt: int
    delivery: int
    line: str
    at: dt.datetime


@attrs.frozen
class Waiting:
    """A delivery of a step's attempt waits (durable steps): its wait ``index``, the
    conditions as JSON text and as a sentence (``waiting_for``)."""

    seq: int
    run_id: str
    step: str
    attempt: int
    delivery: int
    index: int
    conditions: str
    waiting_for: str
    worker_id: str
    worker_name: str
    at: dt.datetime


@attrs.frozen
class Woken:
    """Wait ``index`` of a step's attempt ended by its condition ``condition``."""

    seq: int
    run_id: str
    step: str
    attempt: int
    index: int
    condition: int
    kind: str
    event_key: str | None
    event_id: str | None
    payload: str | None  # JSON text
    at: dt.datetime


@attrs.frozen
class Held:
    """A step's attempt kept back by flow control (``kind``), and why."""

    seq: int
    run_id: str
    step: str
    attempt: int
    kind: str
    reason: str
    at: dt.datetime
    moved_from: str | None = None  # a moved task held (``StepHeld.moved_from``)


RunOp = (
    Created
    | Rejected
    | CancelRequested
    | Finished
    | Queued
    | RetryScheduled
    | StepFinished
    | Assigned
    | Result
    | Log
    | Waiting
    | Woken
    | Held
)


@attrs.frozen
class CronChange:
    """A cron's record (``change``: created, armed, fired, deleted or rejected): the fields
    that kind carries are set, the others None."""

    seq: int
    namespace: str
    name: str
    change: str
    cron_id: str | None
    at: dt.datetime
    workflow: str | None = None
    expression: str | None = None
    timezone: str | None = None
    input: str | None = None
    fire_at: dt.datetime | None = None
    run_id: str | None = None
    reason: str | None = None


@attrs.frozen
class ScheduleChange:
    """A scheduled run's record (``change``: created, fired, deleted or rejected)."""

    seq: int
    namespace: str
    id: str
    change: str
    at: dt.datetime
    workflow: str | None = None
    trigger_at: dt.datetime | None = None
    input: str | None = None
    run_id: str | None = None
    reason: str | None = None


TriggerOp = CronChange | ScheduleChange

Op = Event | Workflow | Rejection | RunOp | TriggerOp
