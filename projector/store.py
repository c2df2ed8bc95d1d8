"""The statements that load a batch's rows and write what its fold changed: a few per batch,
whatever its size, never one per message.

- :func:`lock` serializes writers of one tenant's projection in one schema for the rest of
  the transaction (a transaction-scoped advisory lock), so the rows a batch loads stay as
  loaded until it commits: a batch reads, folds and writes without racing another
  projector of the same tenant.
- :func:`load` reads every run, step and attempt of the runs a batch names: three queries,
  pipelined, each picking rows by ``tenant = $1 AND <run id> = ANY($2)``, which only the
  primary key serves, and planned at each call (never a plan cached while the tables were
  empty). JSON columns come back as text and go back as text: exactly what was stored.
- :func:`write` sends one multi-row statement per table that changed (``INSERT ... SELECT
  FROM unnest(...)``): runs, steps and attempts as upserts on their primary key that apply
  only over an older ``last_seq``; events, workflows, log lines and rejections as inserts
  that keep a row already there.

Every statement reads and writes only rows of the batch's tenant, given once as a
parameter: two tenants using the same run id never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

import attrs
import psycopg
from psycopg.rows import args_row

import schemas
from projector.fold import Fold
from projector.rows import AttemptRow, CronRow, RunRow, ScheduleRow, StepRow, WaitRow

# Two-key advisory locks (class, key) do not overlap the one-key space ``migrate`` uses.
_LOCK_CLASS = 0x6E617470  # "natp"


@attrs.frozen
class Col:
    """A column written from ``attr`` of each row, sent as an array of ``type``."""

    name: LiteralString
    type: LiteralString = "text"
    cast: LiteralString = ""  # applied to the array's element in the SELECT
    attr: str = ""

    @property
    def source(self) -> str:
        return self.attr or self.name


def _insert(table: Table) -> LiteralString:
    names = ", ".join(c.name for c in table.cols)
    return (
        "INSERT INTO " + table.name + " (tenant, " + names + ") SELECT %(tenant)s::text, "
        + ", ".join("u." + c.name + c.cast for c in table.cols)
        + " FROM unnest("
        + ", ".join("%(" + c.name + ")b::" + c.type + "[]" for c in table.cols)
        + ") AS u(" + names + ") " + table.conflict
    )  # fmt: skip


@attrs.frozen
class Table:
    """One multi-row insert into ``name``: its columns, then what a conflict does. The
    arrays go in binary (``%b``): psycopg dumps them several times faster than as text."""

    name: LiteralString
    cols: tuple[Col, ...]
    conflict: LiteralString
    sql: LiteralString = attrs.field(init=False, default=attrs.Factory(_insert, takes_self=True))

    def params(self, tenant: str, rows: Sequence[object]) -> dict[str, Any]:
        out: dict[str, Any] = {c.name: [getattr(r, c.source) for r in rows] for c in self.cols}
        out["tenant"] = tenant
        return out


def _newer(
    table: LiteralString, key: LiteralString, cols: tuple[LiteralString, ...]
) -> LiteralString:
    """On a conflict over ``key``, take ``cols`` from the new row if it is newer."""
    return (
        "ON CONFLICT (" + key + ") DO UPDATE SET "
        + ", ".join(c + " = excluded." + c for c in (*cols, "last_seq"))
        + " WHERE " + table + ".last_seq < excluded.last_seq"
    )  # fmt: skip


_TS, _JSON = "timestamptz", "::jsonb"
_RUN_CHANGES: tuple[LiteralString, ...] = ("status", "error", "started_at", "finished_at",
                                           "cancel_requested_at", "cancel_reason")  # fmt: skip
RUNS = Table(
    "runs",
    (Col("id"), Col("namespace"), Col("workflow"), Col("workflow_version"), Col("status"),
     Col("input", cast=_JSON), Col("triggered_by_key"), Col("triggered_by_event_id"),
     Col("error"), Col("created_at", _TS), Col("started_at", _TS), Col("finished_at", _TS),
     Col("last_seq", "bigint"), Col("cancel_requested_at", _TS), Col("cancel_reason"),
     Col("replay_of"), Col("replay_from_step"), Col("parent_run_id"), Col("parent_step"),
     Col("child_key"), Col("additional_metadata", cast=_JSON), Col("triggered_by_cron"),
     Col("triggered_by_schedule"), Col("trigger_fire_at", _TS), Col("concurrency_key"),
     Col("concurrency", cast=_JSON), Col("priority", "smallint")),
    _newer("runs", "tenant, id", _RUN_CHANGES),
)  # fmt: skip
_STEP_CHANGES: tuple[LiteralString, ...] = ("status", "output", "error", "queued_at",
                                            "started_at", "finished_at", "attempt",
                                            "retry_due_at", "waiting_for")  # fmt: skip
STEPS = Table(
    "steps",
    (Col("run_id"), Col("name"), Col("parents", cast="::text[]"), Col("on_failure", "boolean"),
     Col("status"), Col("output", cast=_JSON), Col("error"), Col("queued_at", _TS),
     Col("started_at", _TS), Col("finished_at", _TS), Col("attempt", "integer"),
     Col("last_seq", "bigint"), Col("retry_due_at", _TS), Col("waiting_for"),
     Col("on_success", "boolean")),
    _newer("steps", "tenant, run_id, name", _STEP_CHANGES),
)  # fmt: skip
_ATTEMPT_CHANGES: tuple[LiteralString, ...] = ("worker_id", "worker_name", "status",
                                               "started_at", "finished_at", "error",
                                               "output")  # fmt: skip
ATTEMPTS = Table(
    "attempts",
    (Col("run_id"), Col("step"), Col("attempt", "integer"), Col("delivery", "integer"),
     Col("worker_id"), Col("worker_name"), Col("status"), Col("started_at", _TS),
     Col("finished_at", _TS), Col("error"), Col("output", cast=_JSON),
     Col("last_seq", "bigint")),
    _newer("attempts", "tenant, run_id, step, attempt, delivery", _ATTEMPT_CHANGES),
)  # fmt: skip
_WAIT_CHANGES: tuple[LiteralString, ...] = ("woken_at", "condition", "kind", "event_key",
                                            "event_id", "payload")  # fmt: skip
STEP_WAITS = Table(
    "step_waits",
    (Col("run_id"), Col("step"), Col("attempt", "integer"), Col("wait_index", "integer"),
     Col("delivery", "integer"), Col("conditions", cast=_JSON), Col("waiting_for"),
     Col("worker_id"), Col("worker_name"), Col("waited_at", _TS), Col("woken_at", _TS),
     Col("condition", "integer"), Col("kind"), Col("event_key"), Col("event_id"),
     Col("payload", cast=_JSON), Col("last_seq", "bigint")),
    _newer("step_waits", "tenant, run_id, step, attempt, wait_index", _WAIT_CHANGES),
)  # fmt: skip
_KEEP: LiteralString = "ON CONFLICT DO NOTHING"
EVENTS = Table(
    "events",
    (Col("namespace"), Col("seq", "bigint"), Col("key"), Col("payload", cast=_JSON),
     Col("raw"), Col("valid", "boolean"), Col("received_at", _TS), Col("replay_of", "bigint"),
     Col("additional_metadata", cast=_JSON)),
    _KEEP,
)  # fmt: skip
WORKFLOWS = Table(
    "workflows",
    (Col("namespace"), Col("name"), Col("version"), Col("definition", cast=_JSON),
     Col("on_events", cast="::text[]"), Col("registered_at", _TS),
     Col("last_seq", "bigint", attr="seq")),
    _KEEP,
)  # fmt: skip
STEP_LOGS = Table(
    "step_logs",
    (Col("seq", "bigint"), Col("run_id"), Col("step"), Col("attempt", "integer"),
     Col("delivery", "integer"), Col("line"), Col("at", _TS)),
    _KEEP,
)  # fmt: skip
REJECTIONS = Table(
    "rejections", (Col("seq", "bigint"), Col("subject"), Col("reason"), Col("at", _TS)), _KEEP
)

_CRON_COLS: tuple[LiteralString, ...] = ("cron_id", "workflow", "expression", "timezone",
                                         "input", "status", "reason", "created_at",
                                         "next_fire_at", "last_fire_at", "last_run_id",
                                         "deleted_at")  # fmt: skip
CRONS = Table(
    "crons",
    (Col("namespace"), Col("name"), Col("cron_id"), Col("workflow"), Col("expression"),
     Col("timezone"), Col("input", cast=_JSON), Col("status"), Col("reason"),
     Col("created_at", _TS), Col("next_fire_at", _TS), Col("last_fire_at", _TS),
     Col("last_run_id"), Col("deleted_at", _TS), Col("last_seq", "bigint")),
    _newer("crons", "tenant, namespace, name", _CRON_COLS),
)  # fmt: skip
_SCHEDULE_COLS: tuple[LiteralString, ...] = ("status", "reason", "run_id", "fired_at",
                                             "deleted_at")  # fmt: skip
SCHEDULES = Table(
    "schedules",
    (Col("namespace"), Col("id"), Col("workflow"), Col("trigger_at", _TS),
     Col("input", cast=_JSON), Col("status"), Col("reason"), Col("run_id"),
     Col("created_at", _TS), Col("fired_at", _TS), Col("deleted_at", _TS),
     Col("last_seq", "bigint")),
    _newer("schedules", "tenant, namespace, id", _SCHEDULE_COLS),
)  # fmt: skip
LOAD_CRONS: LiteralString = (
    "SELECT namespace, name, cron_id, workflow, expression, timezone, input::text, status,"
    " reason, created_at, next_fire_at, last_fire_at, last_run_id, deleted_at, last_seq"
    " FROM crons WHERE tenant = %(tenant)s"
    " AND (namespace, name) IN (SELECT * FROM unnest(%(ns)s::text[], %(names)s::text[]))"
)
LOAD_SCHEDULES: LiteralString = (
    "SELECT namespace, id, workflow, trigger_at, input::text, status, reason, run_id,"
    " created_at, fired_at, deleted_at, last_seq"
    " FROM schedules WHERE tenant = %(tenant)s"
    " AND (namespace, id) IN (SELECT * FROM unnest(%(ns)s::text[], %(names)s::text[]))"
)
LOAD_RUNS: LiteralString = (
    "SELECT id, namespace, workflow, status, error, created_at, started_at, finished_at,"
    " last_seq, cancel_requested_at, cancel_reason FROM runs"
    " WHERE tenant = %(tenant)s AND id = ANY(%(ids)s::text[])"
)
LOAD_STEPS: LiteralString = (
    "SELECT run_id, name, parents::text, on_failure, status, output::text, error, queued_at,"
    " started_at, finished_at, attempt, last_seq, retry_due_at, waiting_for FROM steps"
    " WHERE tenant = %(tenant)s AND run_id = ANY(%(ids)s::text[])"
)
LOAD_ATTEMPTS: LiteralString = (
    "SELECT run_id, step, attempt, delivery, worker_id, worker_name, status, started_at,"
    " finished_at, error, output::text, last_seq FROM attempts"
    " WHERE tenant = %(tenant)s AND run_id = ANY(%(ids)s::text[])"
)
LOAD_WAITS: LiteralString = (
    "SELECT run_id, step, attempt, wait_index, delivery, conditions::text, waiting_for,"
    " worker_id, worker_name, waited_at, woken_at, condition, kind, event_key, event_id,"
    " payload::text, last_seq FROM step_waits"
    " WHERE tenant = %(tenant)s AND run_id = ANY(%(ids)s::text[])"
)
CHECKPOINT: LiteralString = (
    "INSERT INTO projector_checkpoints (stream, last_seq) VALUES (%(stream)s, %(seq)s)"
    " ON CONFLICT (stream) DO UPDATE"
    " SET last_seq = GREATEST(projector_checkpoints.last_seq, excluded.last_seq)"
)


async def lock(conn: psycopg.AsyncConnection[Any], tenant: str) -> None:
    """Hold, until the transaction ends, the lock on ``tenant``'s projection in the current
    schema."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '.' || %s))",
        (_LOCK_CLASS, schemas.stream_name(tenant)),
    )


async def load_triggers(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    crons: Sequence[tuple[str, str]],
    schedules: Sequence[tuple[str, str]],
) -> tuple[list[CronRow], list[ScheduleRow]]:
    """The crons and scheduled runs (by namespace and name or id) a batch names."""
    out_crons: list[CronRow] = []
    out_schedules: list[ScheduleRow] = []
    if crons:
        cur = conn.cursor(row_factory=args_row(CronRow))
        async with cur:
            params = {"tenant": tenant, "ns": [k[0] for k in crons], "names": [k[1] for k in crons]}
            await cur.execute(LOAD_CRONS, params, prepare=False)
            out_crons = await cur.fetchall()
    if schedules:
        cur2 = conn.cursor(row_factory=args_row(ScheduleRow))
        async with cur2:
            ns, ids = [k[0] for k in schedules], [k[1] for k in schedules]
            await cur2.execute(
                LOAD_SCHEDULES, {"tenant": tenant, "ns": ns, "names": ids}, prepare=False
            )
            out_schedules = await cur2.fetchall()
    return out_crons, out_schedules


async def load(
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    run_ids: Sequence[str],
    wait_runs: Sequence[str] = (),
) -> Fold:
    """A fold holding every run, step and attempt of ``run_ids`` in ``tenant``, and the
    durable steps' waits of ``wait_runs`` (the runs a waiting or woken names: no other
    operation reads them, so most batches load none)."""
    if not run_ids:
        return Fold((), (), ())
    params = {"tenant": tenant, "ids": list(run_ids)}
    runs = conn.cursor(row_factory=args_row(RunRow))
    steps = conn.cursor(row_factory=args_row(StepRow))
    attempts = conn.cursor(row_factory=args_row(AttemptRow))
    waits = conn.cursor(row_factory=args_row(WaitRow))
    async with runs, steps, attempts, waits:
        async with conn.pipeline():
            await runs.execute(LOAD_RUNS, params, prepare=False)
            await steps.execute(LOAD_STEPS, params, prepare=False)
            await attempts.execute(LOAD_ATTEMPTS, params, prepare=False)
            if wait_runs:
                wait_params = {"tenant": tenant, "ids": list(wait_runs)}
                await waits.execute(LOAD_WAITS, wait_params, prepare=False)
        return Fold(
            await runs.fetchall(),
            await steps.fetchall(),
            await attempts.fetchall(),
            waits=await waits.fetchall() if wait_runs else (),
        )


def statements(tenant: str, fold: Fold) -> list[tuple[LiteralString, dict[str, Any]]]:
    """The statements that store what ``fold`` changed, one per table with changes."""
    out = []
    for table, rows in (
        (EVENTS, list(fold.events.values())),
        (WORKFLOWS, list(fold.workflows.values())),
        (RUNS, fold.changed_runs),
        (STEPS, fold.changed_steps),
        (ATTEMPTS, fold.changed_attempts),
        (STEP_WAITS, fold.changed_waits),
        (STEP_LOGS, list(fold.logs.values())),
        (REJECTIONS, list(fold.rejections.values())),
        (CRONS, fold.changed_crons),
        (SCHEDULES, fold.changed_schedules),
    ):
        if rows:
            out.append((table.sql, table.params(tenant, rows)))
    return out


async def write(
    conn: psycopg.AsyncConnection[Any], tenant: str, fold: Fold, checkpoint: int | None = None
) -> None:
    """Store what ``fold`` changed and, if given, the stream's new high-water mark."""
    stmts = statements(tenant, fold)
    if checkpoint is not None:
        stmts.append((CHECKPOINT, {"stream": schemas.stream_name(tenant), "seq": checkpoint}))
    async with conn.pipeline():
        for sql, params in stmts:
            await conn.execute(sql, params)
