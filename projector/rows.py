"""The rows a batch can change, as mutable states the fold works on.

Column for column what the tables hold (``projector/schema.sql``), JSON columns as JSON text
and ``text[]`` columns as Postgres array literals, so a row loaded and written back unchanged
is stored exactly as it was. The columns a load reads come first, in the load's order
(:mod:`projector.store` builds rows from them positionally); ``dirty`` says the fold
changed the row, so it must be written.
"""

from __future__ import annotations

import datetime as dt

import attrs


@attrs.define
class RunRow:
    """A run; the fields up to ``cancel_reason`` are what a load reads."""

    id: str
    namespace: str
    workflow: str
    status: str
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_seq: int
    cancel_requested_at: dt.datetime | None
    cancel_reason: str | None
    # Written when the run is inserted, never changed: not loaded.
    workflow_version: str | None = None
    input: str | None = None
    triggered_by_key: str | None = None
    triggered_by_event_id: str | None = None
    replay_of: str | None = None
    replay_from_step: str | None = None
    parent_run_id: str | None = None
    parent_step: str | None = None
    child_key: str | None = None
    additional_metadata: str | None = None  # JSON text of an object of strings
    triggered_by_cron: str | None = None
    triggered_by_schedule: str | None = None
    trigger_fire_at: dt.datetime | None = None
    concurrency_key: str | None = None
    concurrency: str | None = None  # JSON text: expression, max_runs, limit_strategy
    priority: int | None = None
    dirty: bool = False


@attrs.define
class StepRow:
    run_id: str
    name: str
    parents: str
    on_failure: bool
    status: str
    output: str | None
    error: str | None
    queued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempt: int | None
    last_seq: int
    retry_due_at: dt.datetime | None
    # What a WAITING step waits for (durable steps), as a sentence; None when not waiting.
    waiting_for: str | None = None
    # Written when the step is inserted, never changed: not loaded.
    on_success: bool = False
    dirty: bool = False


@attrs.define
class AttemptRow:
    run_id: str
    step: str
    attempt: int
    delivery: int
    worker_id: str | None
    worker_name: str | None
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    output: str | None
    last_seq: int
    dirty: bool = False


@attrs.define
class WaitRow:
    """A durable step's wait (``step_waits``), every column (a load reads them all, in
    this order): its ``waiting``, then its ``woken`` once one came."""

    run_id: str
    step: str
    attempt: int
    wait_index: int
    delivery: int
    conditions: str  # JSON text
    waiting_for: str
    worker_id: str
    worker_name: str
    waited_at: dt.datetime
    woken_at: dt.datetime | None
    condition: int | None
    kind: str | None
    event_key: str | None
    event_id: str | None
    payload: str | None  # JSON text
    last_seq: int
    dirty: bool = False


Row = RunRow | StepRow | AttemptRow | WaitRow


@attrs.define
class CronRow:
    """A cron, every column (a load reads them all, in this order)."""

    namespace: str
    name: str
    cron_id: str
    workflow: str
    expression: str
    timezone: str | None
    input: str | None
    status: str
    reason: str | None
    created_at: dt.datetime
    next_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_run_id: str | None
    deleted_at: dt.datetime | None
    last_seq: int
    dirty: bool = False


@attrs.define
class ScheduleRow:
    """A scheduled run, every column (a load reads them all, in this order)."""

    namespace: str
    id: str
    workflow: str
    trigger_at: dt.datetime | None
    input: str | None
    status: str
    reason: str | None
    run_id: str | None
    created_at: dt.datetime
    fired_at: dt.datetime | None
    deleted_at: dt.datetime | None
    last_seq: int
    dirty: bool = False
