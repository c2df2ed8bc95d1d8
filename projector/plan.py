"""What one log record does to the read model: a pure function from a record to statements.

Each statement is idempotent: inserts do nothing when the row exists, updates apply only to
rows whose ``last_seq`` is older than the record. A record that cannot be decoded becomes
a ``rejections`` row instead.

Step statuses: a step of the run's DAG (or its on-failure step) that was never queued is
``PENDING``; then it is ``QUEUED``, ``RUNNING`` and one of the terminal
:class:`schemas.RunStatus` values. A step keeps its earliest ``queued_at`` and
``started_at`` over retries; ``attempt`` is its latest. A retry with backoff puts it back
to ``QUEUED`` with the next attempt and ``retry_due_at``; a handed-back task puts it back
to ``QUEUED`` until its next delivery is assigned.

Attempt statuses: ``RUNNING``, then ``SUCCEEDED`` or ``FAILED`` from its result;
``CANCELLED`` when the worker handed it back or the run ended before it reported; ``LOST``
when a later delivery of the same attempt was assigned (its worker is presumed dead). A
result newer than any of these still wins.

Tenants: run ids are not unique across tenants (clients choose those of direct runs, the
dispatcher derives the others predictably), and all tenants share the tables. So a run is
keyed by ``(tenant, id)`` and every row under it (steps, attempts, log lines) carries its
tenant; every statement reads and writes only rows of the message's own tenant, the one in
its subject. Two tenants using the same run id each get their own run; neither can see,
change or squat the other's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, LiteralString

import attrs

import schemas
from eventstore import Record
from projector import _values as v
from schemas import DecodeError, RunStatus, SubjectError
from schemas.subjects import ParsedSubject

PENDING = "PENDING"
_TERMINAL = "('SUCCEEDED', 'FAILED', 'CANCELLED')"


@attrs.frozen
class Stmt:
    sql: LiteralString
    params: dict[str, Any]


def received_at(record: Record) -> dt.datetime | None:
    """The stream timestamp, once :class:`eventstore.Record` carries one (``time``)."""
    value = getattr(record, "time", None)
    return value if isinstance(value, dt.datetime) else None


def rejection(tenant: str, record: Record, reason: str) -> Stmt:
    return Stmt(
        "INSERT INTO rejections (tenant, seq, subject, reason, at)"
        " VALUES (%(tenant)s, %(seq)s, %(subject)s, %(reason)s, %(at)s)"
        " ON CONFLICT DO NOTHING",
        {
            "tenant": tenant,
            "seq": record.seq,
            "subject": v.text(record.subject, "subject"),
            "reason": v.text(reason, "reason"),
            "at": received_at(record),
        },
    )


def plan(tenant: str, record: Record) -> list[Stmt]:
    """The statements that apply ``record``, or a rejection when it cannot be decoded."""
    try:
        parsed = schemas.parse(record.subject)
        if parsed.scope.tenant != tenant:
            raise SubjectError(f"subject is not in tenant {tenant!r}")
        if parsed.area == "events":
            return [_event(tenant, record, parsed)]
        if parsed.area == "workers":
            # Heartbeats carry a message TTL and age out of the log: projecting them would
            # make a rebuild differ from the live projection.
            return []
        message = _decode(parsed, record.data)
        if parsed.area == "workflows":
            return [_workflow(tenant, record.seq, parsed, message)]
        if parsed.area == "tasks":
            return [_task(tenant, record, message)]
        return _run_message(tenant, record, parsed, message)
    except (SubjectError, DecodeError) as exc:
        return [rejection(tenant, record, str(exc))]


def _decode(parsed: ParsedSubject, data: bytes) -> Any:
    try:
        return schemas.decode_subject(parsed, data)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A body shaped badly enough to get past the codec's own checks.
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"bad {parsed.area} message: {type(exc).__name__}: {exc}") from None


def _event(tenant: str, record: Record, parsed: ParsedSubject) -> Stmt:
    params: dict[str, Any] = {
        "tenant": tenant,
        "namespace": parsed.scope.namespace,
        "seq": record.seq,
        "key": v.text(parsed.event_key, "event key"),
        "received_at": received_at(record),
    }
    try:
        params |= {"payload": v.jsonb(schemas.decode_json(record.data)), "raw": None}
        params["valid"] = True
    except DecodeError:
        raw = record.data.decode("utf-8", errors="replace")
        params |= {"payload": None, "raw": v.text(raw, "raw"), "valid": False}
    return Stmt(
        "INSERT INTO events (tenant, namespace, seq, key, payload, raw, valid, received_at)"
        " VALUES (%(tenant)s, %(namespace)s, %(seq)s, %(key)s, %(payload)s, %(raw)s,"
        " %(valid)s, %(received_at)s) ON CONFLICT DO NOTHING",
        params,
    )


def _workflow(tenant: str, seq: int, parsed: ParsedSubject, wf: schemas.WorkflowDef) -> Stmt:
    return Stmt(
        "INSERT INTO workflows (tenant, namespace, name, version, definition, on_events,"
        " registered_at, last_seq) VALUES (%(tenant)s, %(namespace)s, %(name)s, %(version)s,"
        " %(definition)s, %(on_events)s, %(registered_at)s, %(seq)s) ON CONFLICT DO NOTHING",
        {
            "tenant": tenant,
            "namespace": parsed.scope.namespace,
            "name": v.text(wf.name, "name"),
            "version": v.text(wf.version, "version"),
            "definition": v.jsonb(attrs.asdict(wf)),
            "on_events": v.texts(wf.on_events, "on_events"),
            "registered_at": v.timestamp(wf.registered_at, "registered_at"),
            "seq": seq,
        },
    )


# A condition: the run exists (in the message's tenant). Rows under a run are only inserted
# once it does; updates need no such check, their rows exist only under a run.
_RUN_EXISTS = " EXISTS (SELECT 1 FROM runs WHERE runs.tenant = %(tenant)s AND runs.id = %(run_id)s)"
# Where a statement on steps or attempts picks the rows of the message's run.
_OF_RUN = " tenant = %(tenant)s AND run_id = %(run_id)s"
_LOST = "no result: the task was redelivered to another worker (worker presumed dead)"
_HANDED_BACK = "handed back: the worker shut down before finishing"
_RUN_ENDED = "the run ended before this attempt reported"


def _run_message(tenant: str, record: Record, parsed: ParsedSubject, msg: Any) -> list[Stmt]:
    base = {"seq": record.seq, "run_id": v.text(parsed.run_id, "run_id"), "tenant": tenant}
    if isinstance(msg, schemas.RunCreated):
        return _created(base | {"ns": parsed.scope.namespace}, msg)
    if isinstance(msg, schemas.RunRejected):
        return [_rejected(base | {"ns": parsed.scope.namespace}, msg)]
    if isinstance(msg, schemas.RunRequested):
        return []  # the dispatcher answers with created or rejected
    if isinstance(msg, schemas.RunCancelRequested):
        return [_cancel_requested(base, msg)]
    if isinstance(msg, schemas.RunFinished):
        return _finished(base, msg)
    step = base | {"step": v.text(msg.step, "step"), "attempt": v.count(msg.attempt, "attempt")}
    if isinstance(msg, schemas.StepQueued):
        return [_queued(step | {"at": v.timestamp(msg.queued_at, "queued_at")})]
    if isinstance(msg, schemas.StepRetryScheduled):
        return [_retry_scheduled(step, msg)]
    if isinstance(msg, schemas.StepFinished):
        return [_step_finished(step, msg)]
    step["delivery"] = v.count(msg.delivery, "delivery")
    if isinstance(msg, schemas.StepAssigned):
        return _assigned(step, msg)
    if isinstance(msg, schemas.StepResult):
        return _result(step, msg)
    if isinstance(msg, schemas.StepLog):
        return [_log(step, msg)]
    raise DecodeError(f"the projector does not know run messages of kind {parsed.run_kind!r}")


def _created(params: dict[str, Any], msg: schemas.RunCreated) -> list[Stmt]:
    trigger = msg.triggered_by
    run = Stmt(
        "INSERT INTO runs (id, tenant, namespace, workflow, workflow_version, status, input,"
        " triggered_by_key, triggered_by_event_id, created_at, last_seq) VALUES (%(run_id)s,"
        " %(tenant)s, %(ns)s, %(workflow)s, %(version)s, 'QUEUED', %(input)s,"
        " %(event_key)s, %(event_id)s, %(created_at)s, %(seq)s) ON CONFLICT DO NOTHING",
        params
        | {
            "workflow": v.text(msg.workflow, "workflow"),
            "version": v.text(msg.workflow_version, "workflow_version"),
            "input": v.jsonb(msg.input),
            "event_key": None if trigger is None else v.text(trigger.event_key, "event_key"),
            "event_id": None if trigger is None else v.text(trigger.event_id, "event_id"),
            "created_at": v.timestamp(msg.created_at, "created_at"),
        },
    )
    defs = [(s, False) for s in msg.steps]
    if msg.on_failure is not None:
        defs.append((msg.on_failure, True))
    steps = [
        Stmt(
            "INSERT INTO steps (tenant, run_id, name, parents, status, on_failure, last_seq)"
            " SELECT %(tenant)s::text, %(run_id)s::text, %(name)s::text, %(parents)s::text[],"
            " 'PENDING', %(on_failure)s::boolean, %(seq)s::bigint"
            " WHERE" + _RUN_EXISTS + " ON CONFLICT DO NOTHING",
            {
                "run_id": params["run_id"],
                "tenant": params["tenant"],
                "seq": params["seq"],
                "name": v.text(s.name, "step name"),
                # The on-failure step is outside the DAG, whatever parents it declares.
                "parents": [] if on_failure else v.texts(s.parents, "parents"),
                "on_failure": on_failure,
            },
        )
        for s, on_failure in defs
    ]
    return [run, *steps]


def _rejected(params: dict[str, Any], msg: schemas.RunRejected) -> Stmt:
    return Stmt(
        "INSERT INTO runs (id, tenant, namespace, workflow, status, error, created_at,"
        " finished_at, last_seq) VALUES (%(run_id)s, %(tenant)s, %(ns)s,"
        " %(workflow)s, 'FAILED', %(reason)s, %(at)s, %(at)s, %(seq)s)"
        " ON CONFLICT DO NOTHING",
        params
        | {
            "workflow": v.text(msg.workflow, "workflow"),
            "reason": v.text(msg.reason, "reason"),
            "at": v.timestamp(msg.at, "at"),
        },
    )


def _cancel_requested(params: dict[str, Any], msg: schemas.RunCancelRequested) -> Stmt:
    # The first request of a run still going counts; the dispatcher ignores the others.
    return Stmt(
        "UPDATE runs SET cancel_requested_at = %(at)s, cancel_reason = %(reason)s,"
        " last_seq = %(seq)s WHERE tenant = %(tenant)s AND id = %(run_id)s"
        " AND last_seq < %(seq)s AND cancel_requested_at IS NULL"
        " AND status NOT IN " + _TERMINAL,
        params
        | {
            "at": v.timestamp(msg.requested_at, "requested_at"),
            "reason": v.opt_text(msg.reason, "reason"),
        },
    )


def _finished(params: dict[str, Any], msg: schemas.RunFinished) -> list[Stmt]:
    params = params | {
        "status": str(msg.status),
        "error": v.opt_text(msg.error, "error"),
        "at": v.timestamp(msg.at, "at"),
        "why": _RUN_ENDED,
    }
    run = Stmt(
        "UPDATE runs SET status = %(status)s, error = %(error)s, finished_at = %(at)s,"
        " last_seq = %(seq)s WHERE tenant = %(tenant)s AND id = %(run_id)s"
        " AND last_seq < %(seq)s",
        params,
    )
    if not msg.status.terminal:
        return [run]
    # Attempts nobody reported on; a result appended later still wins (newer seq).
    attempts = Stmt(
        "UPDATE attempts SET status = 'CANCELLED', error = %(why)s, finished_at = %(at)s,"
        " last_seq = %(seq)s WHERE" + _OF_RUN + " AND status = 'RUNNING'"
        " AND last_seq < %(seq)s",
        params,
    )
    return [run, attempts]


def _task(tenant: str, record: Record, task: schemas.Task) -> Stmt:
    """A task is its step queued: the dispatcher writes no separate ``queued`` any more
    (older logs hold both; applying both changes nothing more)."""
    params = {
        "seq": record.seq,
        "tenant": tenant,
        "run_id": v.text(task.run_id, "run_id"),
        "step": v.text(task.step, "step"),
        "attempt": v.count(task.attempt, "attempt"),
        "at": v.timestamp(task.queued_at, "queued_at"),
    }
    return _queued(params)


def _queued(params: dict[str, Any]) -> Stmt:
    return Stmt(
        "UPDATE steps SET status = CASE WHEN status IN " + _TERMINAL + " THEN status"
        " ELSE 'QUEUED' END, queued_at = COALESCE(queued_at, %(at)s), attempt = %(attempt)s,"
        " retry_due_at = NULL, last_seq = %(seq)s WHERE" + _OF_RUN + ""
        " AND name = %(step)s AND last_seq < %(seq)s AND COALESCE(attempt, 0) <= %(attempt)s",
        params,
    )


def _retry_scheduled(params: dict[str, Any], msg: schemas.StepRetryScheduled) -> Stmt:
    return Stmt(
        "UPDATE steps SET status = 'QUEUED', attempt = %(next_attempt)s, error = %(error)s,"
        " retry_due_at = %(due_at)s, last_seq = %(seq)s WHERE" + _OF_RUN + ""
        " AND name = %(step)s AND last_seq < %(seq)s AND status NOT IN " + _TERMINAL + ""
        " AND COALESCE(attempt, 0) < %(next_attempt)s",
        params
        | {
            "next_attempt": v.count(msg.next_attempt, "next_attempt"),
            "due_at": v.timestamp(msg.due_at, "due_at"),
            "error": v.opt_text(msg.error, "error"),
        },
    )


def _assigned(params: dict[str, Any], msg: schemas.StepAssigned) -> list[Stmt]:
    params = params | {
        "worker_id": v.text(msg.worker_id, "worker_id"),
        "worker_name": v.text(msg.worker_name, "worker_name"),
        "at": v.timestamp(msg.started_at, "started_at"),
        "why": _LOST,
    }
    attempt = Stmt(
        "INSERT INTO attempts (tenant, run_id, step, attempt, delivery, worker_id, worker_name,"
        " status, started_at, last_seq) SELECT %(tenant)s::text, %(run_id)s::text,"
        " %(step)s::text, %(attempt)s::integer, %(delivery)s::integer, %(worker_id)s::text,"
        " %(worker_name)s::text, 'RUNNING', %(at)s::timestamptz, %(seq)s::bigint"
        " WHERE" + _RUN_EXISTS + ""
        " ON CONFLICT (tenant, run_id, step, attempt, delivery) DO UPDATE SET"
        " worker_id = excluded.worker_id, worker_name = excluded.worker_name,"
        " started_at = COALESCE(attempts.started_at, excluded.started_at),"
        " last_seq = excluded.last_seq WHERE attempts.last_seq < excluded.last_seq",
        params,
    )
    # JetStream redelivered the task: whoever held an earlier delivery never answered.
    lost = Stmt(
        "UPDATE attempts SET status = 'LOST', error = %(why)s, finished_at = %(at)s,"
        " last_seq = %(seq)s WHERE" + _OF_RUN + " AND step = %(step)s"
        " AND attempt = %(attempt)s AND delivery < %(delivery)s AND status = 'RUNNING'"
        " AND last_seq < %(seq)s",
        params,
    )
    step = Stmt(
        "UPDATE steps SET status = CASE WHEN status IN " + _TERMINAL + " THEN status"
        " ELSE 'RUNNING' END, started_at = COALESCE(started_at, %(at)s), attempt = %(attempt)s,"
        " retry_due_at = NULL, last_seq = %(seq)s WHERE" + _OF_RUN + ""
        " AND name = %(step)s AND last_seq < %(seq)s AND COALESCE(attempt, 0) <= %(attempt)s"
        # A stale copy of an assignment whose delivery (or a later one) already reported,
        # say handed back, must not make the step RUNNING again.
        " AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.tenant = %(tenant)s"
        " AND a.run_id = %(run_id)s AND a.step = %(step)s AND a.attempt = %(attempt)s"
        " AND a.delivery >= %(delivery)s AND a.finished_at IS NOT NULL)",
        params,
    )
    run = Stmt(
        "UPDATE runs SET status = 'RUNNING', started_at = COALESCE(started_at, %(at)s),"
        " last_seq = %(seq)s WHERE tenant = %(tenant)s AND id = %(run_id)s"
        " AND status = 'QUEUED' AND last_seq < %(seq)s",
        params,
    )
    return [attempt, lost, step, run]


def _result(params: dict[str, Any], msg: schemas.StepResult) -> list[Stmt]:
    ok = v.flag(msg.ok, "ok")
    handed_back = v.flag(msg.handed_back, "handed_back")
    error = v.opt_text(msg.error, "error")
    if handed_back:
        status, error = RunStatus.CANCELLED, error or _HANDED_BACK
    else:
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
    params = params | {
        "worker_id": v.text(msg.worker_id, "worker_id"),
        "status": str(status),
        "at": v.timestamp(msg.finished_at, "finished_at"),
        "error": error,
        "output": v.jsonb(msg.output) if ok or msg.output is not None else None,
    }
    attempt = Stmt(
        "INSERT INTO attempts (tenant, run_id, step, attempt, delivery, worker_id, status,"
        " finished_at, error, output, last_seq) SELECT %(tenant)s::text, %(run_id)s::text,"
        " %(step)s::text, %(attempt)s::integer, %(delivery)s::integer, %(worker_id)s::text,"
        " %(status)s::text, %(at)s::timestamptz, %(error)s::text, %(output)s::jsonb,"
        " %(seq)s::bigint WHERE" + _RUN_EXISTS + ""
        " ON CONFLICT (tenant, run_id, step, attempt, delivery) DO UPDATE SET"
        " status = excluded.status, finished_at = excluded.finished_at,"
        " error = excluded.error, output = excluded.output,"
        " worker_id = COALESCE(attempts.worker_id, excluded.worker_id),"
        " last_seq = excluded.last_seq WHERE attempts.last_seq < excluded.last_seq",
        params,
    )
    if not handed_back:
        return [attempt]
    # Another delivery of this attempt follows: the step waits for it, unless it has
    # already been assigned.
    step = Stmt(
        "UPDATE steps SET status = 'QUEUED', last_seq = %(seq)s WHERE" + _OF_RUN + ""
        " AND name = %(step)s AND status = 'RUNNING' AND attempt = %(attempt)s"
        " AND last_seq < %(seq)s AND NOT EXISTS (SELECT 1 FROM attempts a"
        " WHERE a.tenant = %(tenant)s AND a.run_id = %(run_id)s AND a.step = %(step)s"
        " AND a.attempt = %(attempt)s AND a.delivery > %(delivery)s)",
        params,
    )
    return [attempt, step]


def _log(params: dict[str, Any], msg: schemas.StepLog) -> Stmt:
    return Stmt(
        "INSERT INTO step_logs (tenant, seq, run_id, step, attempt, delivery, line, at)"
        " SELECT %(tenant)s::text, %(seq)s::bigint, %(run_id)s::text, %(step)s::text,"
        " %(attempt)s::integer, %(delivery)s::integer, %(line)s::text, %(at)s::timestamptz"
        " WHERE" + _RUN_EXISTS + " ON CONFLICT DO NOTHING",
        params | {"line": v.text(msg.line, "line"), "at": v.timestamp(msg.at, "at")},
    )


def _step_finished(params: dict[str, Any], msg: schemas.StepFinished) -> Stmt:
    ok = msg.status == RunStatus.SUCCEEDED
    # A step the run ended before it was ever queued is finished with attempt 0: it keeps
    # no attempt number.
    return Stmt(
        "UPDATE steps SET status = %(status)s, output = %(output)s, error = %(error)s,"
        " finished_at = %(at)s, attempt = GREATEST(attempt, NULLIF(%(attempt)s, 0)),"
        " retry_due_at = NULL, last_seq = %(seq)s WHERE" + _OF_RUN + ""
        " AND name = %(step)s AND last_seq < %(seq)s",
        params
        | {
            "status": str(msg.status),
            "output": v.jsonb(msg.output) if ok or msg.output is not None else None,
            "error": v.opt_text(msg.error, "error"),
            "at": v.timestamp(msg.at, "at"),
        },
    )
