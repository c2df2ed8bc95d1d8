"""What one log record says to the read model: a pure, total function from a record to
operations (:mod:`projector.ops`), checked and made storable.

``plan`` never raises: a record it cannot decode, or whose values fail the checks of
:mod:`projector._values`, becomes a single :class:`~projector.ops.Rejection`. What each
operation does to the rows is :mod:`projector.fold`'s business; here every value is
checked in a fixed order, so the same record always gets the same rejection reason.

Tenants: run ids are not unique across tenants, so every operation is applied under the
tenant ``plan`` was called with, and a record whose subject names another tenant is
rejected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import attrs

import schemas
from eventstore import Record
from projector import _values as v
from projector import ops
from schemas import DecodeError, RunStatus, SubjectError
from schemas.concurrency import MAX_KEY_CHARS, concurrency_problem
from schemas.durable import StepWaiting, StepWoken, WaitCondition, WaitKind
from schemas.filters import filter_error
from schemas.holds import StepHeld
from schemas.messages import (
    CronArmed,
    CronCreated,
    CronFired,
    CronRejected,
    ScheduleCreated,
    ScheduleFired,
    ScheduleRejected,
)
from schemas.metadata import metadata_of_headers
from schemas.priority import priority_problem
from schemas.ratelimits import set_problem
from schemas.subjects import REPLAY_OF_HEADER, ParsedSubject, sequence


def received_at(record: Record) -> dt.datetime | None:
    """The stream timestamp, when :class:`eventstore.Record` carries one (``time``)."""
    value = getattr(record, "time", None)
    return value if isinstance(value, dt.datetime) else None


def rejection(record: Record, reason: str) -> ops.Rejection:
    return ops.Rejection(
        record.seq, v.text(record.subject, "subject"), v.text(reason, "reason"), received_at(record)
    )


def plan(tenant: str, record: Record) -> list[ops.Op]:
    """The operations that apply ``record``, or a rejection when it cannot be decoded."""
    try:
        parsed = schemas.parse(record.subject)
        if parsed.scope.tenant != tenant:
            raise SubjectError(f"subject is not in tenant {tenant!r}")
        if parsed.area == "events":
            return [_event(record, parsed)]
        if parsed.area == "crons":
            return [_cron(record.seq, parsed, _decode(parsed, record.data))]
        if parsed.area == "schedules":
            return [_schedule(record.seq, parsed, _decode(parsed, record.data))]
        if parsed.area == "ratelimits":
            # A static rate limit set: the dispatcher's business (no table of them yet);
            # one it cannot use is a rejection, as it ignores it.
            problem = set_problem(_decode(parsed, record.data))
            if problem is not None:
                raise DecodeError(problem)
            return []
        if parsed.area == "workers":
            # Heartbeats carry a message TTL and age out of the log: projecting them would
            # make a rebuild differ from the live projection.
            return []
        message = _decode(parsed, record.data)
        if parsed.area == "workflows":
            return [_workflow(record.seq, parsed, message)]
        if parsed.area == "tasks":
            return [_task(record.seq, message)]
        return _run_message(record.seq, parsed, message)
    except (SubjectError, DecodeError) as exc:
        return [rejection(record, str(exc))]


def _decode(parsed: ParsedSubject, data: bytes) -> Any:
    try:
        return schemas.decode_subject(parsed, data)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # A body shaped badly enough to get past the codec's own checks.
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"bad {parsed.area} message: {type(exc).__name__}: {exc}") from None


def _event(record: Record, parsed: ParsedSubject) -> ops.Event:
    key = v.text(parsed.event_key, "event key")
    try:
        payload: str | None = v.json_text(schemas.decode_json(record.data))
        raw, valid = None, True
    except DecodeError:
        payload, valid = None, False
        raw = v.text(record.data.decode("utf-8", errors="replace"), "raw")
    metadata = metadata_of_headers(record.headers)
    return ops.Event(
        record.seq, parsed.scope.namespace, key, payload, raw, valid, received_at(record),
        _replay_of(record), v.json_text(metadata) if metadata else None,
    )  # fmt: skip


def _replay_of(record: Record) -> int | None:
    """The event this one publishes again, if its header names one (a bad value is not a
    link, and the event is still recorded)."""
    seq = sequence((record.headers or {}).get(REPLAY_OF_HEADER, ""))
    return seq if seq is not None and seq < record.seq else None


def _workflow(seq: int, parsed: ParsedSubject, wf: schemas.WorkflowDef) -> ops.Workflow:
    refused = filter_error(wf.event_filter)
    if refused is not None:  # the dispatcher ignores this registration too
        raise DecodeError(f"workflow {wf.name} version {wf.version} refused: {refused}")
    return ops.Workflow(
        seq=seq,
        namespace=parsed.scope.namespace,
        name=v.text(wf.name, "name"),
        version=v.text(wf.version, "version"),
        definition=v.json_text(attrs.asdict(wf)),
        on_events=v.text_array(v.texts(wf.on_events, "on_events")),
        registered_at=v.timestamp(wf.registered_at, "registered_at"),
    )


def _task(seq: int, task: schemas.Task) -> ops.Queued:
    """A task is its step queued: the dispatcher writes no separate ``queued`` any more
    (older logs hold both; applying both changes nothing more). A durable step's task after
    a wait (``wakes``) is its attempt queued again: the same operation."""
    for wake in task.wakes:
        _woken_values(wake)  # checked (a bad one rejects the task), not stored
    v.count(task.delivery_offset, "delivery_offset")
    v.count(task.moves, "moves")
    return ops.Queued(
        seq,
        v.text(task.run_id, "run_id"),
        v.text(task.step, "step"),
        v.count(task.attempt, "attempt"),
        v.timestamp(task.queued_at, "queued_at"),
        _moved_from(task.moves, task.moved_from),
    )


def _moved_from(moves: int, moved_from: str | None) -> str | None:
    """The worker a moved task moved off (None: not moved)."""
    if not moves:
        return None
    return v.text(moved_from or "", "moved_from")


def _run_message(seq: int, parsed: ParsedSubject, msg: Any) -> list[ops.Op]:
    run_id = v.text(parsed.run_id, "run_id")
    planner = _RUN_PLANNERS.get(type(msg))
    if planner is None:
        raise DecodeError(f"the projector does not know run messages of kind {parsed.run_kind!r}")
    return planner(seq, run_id, parsed.scope.namespace, msg)


def _plan_created(seq: int, run_id: str, ns: str, msg: schemas.RunCreated) -> list[ops.Op]:
    return [_created(seq, run_id, ns, msg)]


def _plan_rejected(seq: int, run_id: str, ns: str, msg: schemas.RunRejected) -> list[ops.Op]:
    workflow, reason = v.text(msg.workflow, "workflow"), v.text(msg.reason, "reason")
    return [ops.Rejected(seq, run_id, ns, workflow, reason, v.timestamp(msg.at, "at"))]


def _plan_requested(seq: int, run_id: str, ns: str, msg: schemas.RunRequested) -> list[ops.Op]:
    return []  # the dispatcher answers with created or rejected


def _plan_cancel(seq: int, run_id: str, ns: str, msg: schemas.RunCancelRequested) -> list[ops.Op]:
    at = v.timestamp(msg.requested_at, "requested_at")
    return [ops.CancelRequested(seq, run_id, at, v.opt_text(msg.reason, "reason"))]


def _plan_finished(seq: int, run_id: str, ns: str, msg: schemas.RunFinished) -> list[ops.Op]:
    status, error = str(msg.status), v.opt_text(msg.error, "error")
    at = v.timestamp(msg.at, "at")
    # The verdicts decided with the run's end, as if each were its own step_finished.
    verdicts: list[ops.Op] = [
        _step_finished(seq, run_id, v.text(s.step, "step"), v.count(s.attempt, "attempt"), s)
        for s in msg.steps
    ]
    return [*verdicts, ops.Finished(seq, run_id, status, msg.status.terminal, error, at)]


def _plan_queued(seq: int, run_id: str, ns: str, msg: schemas.StepQueued) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    return [ops.Queued(seq, run_id, step, attempt, v.timestamp(msg.queued_at, "queued_at"))]


def _plan_retry(seq: int, run_id: str, ns: str, msg: schemas.StepRetryScheduled) -> list[ops.Op]:
    step = v.text(msg.step, "step")
    v.count(msg.attempt, "attempt")  # checked (a bad one rejects the message), not stored
    return [_retry_scheduled(seq, run_id, step, msg)]


def _plan_step_finished(seq: int, run_id: str, ns: str, msg: schemas.StepFinished) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    return [_step_finished(seq, run_id, step, attempt, msg)]


def _plan_assigned(seq: int, run_id: str, ns: str, msg: schemas.StepAssigned) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    delivery = v.count(msg.delivery, "delivery")
    worker_id, name = v.text(msg.worker_id, "worker_id"), v.text(msg.worker_name, "worker_name")
    at = v.timestamp(msg.started_at, "started_at")
    return [ops.Assigned(seq, run_id, step, attempt, delivery, worker_id, name, at)]


def _plan_result(seq: int, run_id: str, ns: str, msg: schemas.StepResult) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    delivery = v.count(msg.delivery, "delivery")
    return [_result(seq, run_id, step, attempt, delivery, msg)]


def _plan_log(seq: int, run_id: str, ns: str, msg: schemas.StepLog) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    delivery = v.count(msg.delivery, "delivery")
    line, at = v.text(msg.line, "line"), v.timestamp(msg.at, "at")
    return [ops.Log(seq, run_id, step, attempt, delivery, line, at)]


def _plan_waiting(seq: int, run_id: str, ns: str, msg: StepWaiting) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    delivery, index = v.count(msg.delivery, "delivery"), v.count(msg.index, "index")
    if not msg.conditions:
        raise DecodeError("a wait needs at least one condition")
    conditions = [_condition(c) for c in msg.conditions]
    worker_id, name = v.text(msg.worker_id, "worker_id"), v.text(msg.worker_name, "worker_name")
    at = v.timestamp(msg.at, "at")
    return [
        ops.Waiting(
            seq, run_id, step, attempt, delivery, index, v.json_text(conditions),
            v.text(waiting_for(msg.conditions), "conditions"), worker_id, name, at,
        )
    ]  # fmt: skip


def _condition(c: WaitCondition) -> dict[str, Any]:
    """One condition of a wait, checked, as stored: a sleep has its time, an event its key."""
    if c.kind is WaitKind.SLEEP:
        v.timestamp(c.until, "until")
        return {"kind": "sleep", "until": c.until}
    out: dict[str, Any] = {"kind": "event", "event_key": v.text(c.event_key, "event_key")}
    expression = v.opt_text(c.expression, "expression")
    if expression is not None:
        out["expression"] = expression
    return out


def waiting_for(conditions: Sequence[WaitCondition]) -> str:
    """What a wait waits for, as a sentence: "sleep until <time>, or event <key> where
    <expression>" (its conditions, any one of which ends it)."""
    said = []
    for c in conditions:
        if c.kind is WaitKind.SLEEP:
            said.append(f"sleep until {c.until}")
        else:
            where = f" where {c.expression}" if c.expression else ""
            said.append(f"event {c.event_key}{where}")
    return ", or ".join(said)


def _woken_values(
    msg: StepWoken,
) -> tuple[str, int, int, int, str | None, str | None, str | None]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    index, condition = v.count(msg.index, "index"), v.count(msg.condition, "condition")
    event_key = v.opt_text(msg.event_key, "event_key")
    event_id = v.opt_text(msg.event_id, "event_id")
    payload = None if msg.payload is None else v.json_text(msg.payload)
    return step, attempt, index, condition, event_key, event_id, payload


def _plan_woken(seq: int, run_id: str, ns: str, msg: StepWoken) -> list[ops.Op]:
    step, attempt, index, condition, event_key, event_id, payload = _woken_values(msg)
    at = v.timestamp(msg.at, "at")
    return [
        ops.Woken(
            seq, run_id, step, attempt, index, condition, str(msg.kind), event_key, event_id,
            payload, at,
        )
    ]  # fmt: skip


def _plan_held(seq: int, run_id: str, ns: str, msg: StepHeld) -> list[ops.Op]:
    step, attempt = v.text(msg.step, "step"), v.count(msg.attempt, "attempt")
    v.count(msg.wakes, "wakes")
    v.count(msg.moves, "moves")
    reason = v.text(msg.reason, "reason")
    moved_from = _moved_from(msg.moves, msg.moved_from)
    at = v.timestamp(msg.at, "at")
    return [ops.Held(seq, run_id, step, attempt, str(msg.kind), reason, at, moved_from)]


# What each run message does, by its class: one lookup, not a chain of isinstance checks
# (the chain was 8% of planning). Every planner checks its values in the order the chain
# did, so a bad message keeps its rejection reason.
_RUN_PLANNERS: dict[type, Callable[[int, str, str, Any], list[ops.Op]]] = {
    schemas.RunCreated: _plan_created,
    schemas.RunRejected: _plan_rejected,
    schemas.RunRequested: _plan_requested,
    schemas.RunCancelRequested: _plan_cancel,
    schemas.RunFinished: _plan_finished,
    schemas.StepQueued: _plan_queued,
    schemas.StepRetryScheduled: _plan_retry,
    schemas.StepFinished: _plan_step_finished,
    schemas.StepAssigned: _plan_assigned,
    schemas.StepResult: _plan_result,
    schemas.StepLog: _plan_log,
    StepWaiting: _plan_waiting,
    StepWoken: _plan_woken,
    StepHeld: _plan_held,
}


def _created(seq: int, run_id: str, ns: str, msg: schemas.RunCreated) -> ops.Created:
    by = msg.trigger
    workflow = v.text(msg.workflow, "workflow")
    version = v.text(msg.workflow_version, "workflow_version")
    input_ = v.json_text(msg.input)
    event = by is not None and by.kind is schemas.TriggerKind.EVENT
    replay = by is not None and by.kind is schemas.TriggerKind.REPLAY
    event_key = v.text(by.event_key, "event_key") if event and by else None
    event_id = v.text(by.event_id, "event_id") if event and by else None
    replay_of = v.text(by.run_id, "run_id") if replay and by else None
    from_step = v.opt_text(by.from_step, "from_step") if replay and by else None
    child = by is not None and by.kind is schemas.TriggerKind.CHILD
    parent = v.text(by.run_id, "run_id") if child and by else None
    parent_step = v.text(by.step, "step") if child and by else None
    child_key = v.text(by.key, "key") if child and by else None
    cron = v.text(by.cron, "cron") if by and by.kind is schemas.TriggerKind.CRON else None
    schedule = (
        v.text(by.schedule_id, "schedule_id")
        if by and by.kind is schemas.TriggerKind.SCHEDULE
        else None
    )
    fire_at = v.timestamp(by.fire_at, "fire_at") if by and (cron or schedule) else None
    created_at = v.timestamp(msg.created_at, "created_at")
    kept = v.mapping(msg.kept, "kept")
    defs = [(s, False, False) for s in msg.steps]
    if msg.on_failure is not None:
        defs.append((msg.on_failure, True, False))
    if msg.on_success is not None:
        defs.append((msg.on_success, False, True))
    steps = tuple(
        ops.NewStep(
            v.text(s.name, "step name"),
            # The on-failure and on-success steps are outside the DAG, whatever parents
            # they declare.
            v.text_array([] if on_failure or on_success else v.texts(s.parents, "parents")),
            on_failure,
            v.json_text(kept[s.name]) if s.name in kept and not on_failure else None,
            on_success,
        )
        for s, on_failure, on_success in defs
    )
    metadata = v.json_text(msg.additional_metadata) if msg.additional_metadata else None
    key, concurrency = _concurrency(msg)
    problem = priority_problem(msg.priority)
    if problem is not None:
        raise DecodeError(problem)
    return ops.Created(
        seq, run_id, ns, workflow, version, input_, event_key, event_id, created_at, steps,
        replay_of, from_step, parent, parent_step, child_key, metadata, cron, schedule,
        fire_at, key, concurrency, msg.priority,
    )  # fmt: skip


def _concurrency(msg: schemas.RunCreated) -> tuple[str | None, str | None]:
    """A run's concurrency key and its workflow's concurrency (JSON text), checked: both
    or neither (a key is evaluated when the run is created; an expression that gives none
    rejects the run instead), a usable concurrency, a key of at most MAX_KEY_CHARS."""
    spec, key = msg.concurrency, msg.concurrency_key
    if spec is None and key is None:
        return None, None
    if spec is None or key is None:
        raise DecodeError("a run has a concurrency key exactly when it has a concurrency")
    problem = concurrency_problem(spec)
    if problem is not None:
        raise DecodeError(f"bad concurrency: {problem}")
    key = v.text(key, "concurrency_key")
    if len(key) > MAX_KEY_CHARS:
        raise DecodeError(f"concurrency_key is longer than {MAX_KEY_CHARS}")
    expression = v.text(spec.expression, "concurrency expression")
    strategy = str(spec.limit_strategy)
    stored = {"expression": expression, "max_runs": spec.max_runs, "limit_strategy": strategy}
    return key, v.json_text(stored)


def _retry_scheduled(
    seq: int, run_id: str, step: str, msg: schemas.StepRetryScheduled
) -> ops.RetryScheduled:
    next_attempt = v.count(msg.next_attempt, "next_attempt")
    due_at = v.timestamp(msg.due_at, "due_at")
    return ops.RetryScheduled(
        seq, run_id, step, next_attempt, due_at, v.opt_text(msg.error, "error")
    )


def _step_finished(
    seq: int, run_id: str, step: str, attempt: int, msg: schemas.StepFinished
) -> ops.StepFinished:
    ok = msg.status == RunStatus.SUCCEEDED
    output = v.json_text(msg.output) if ok or msg.output is not None else None
    error, at = v.opt_text(msg.error, "error"), v.timestamp(msg.at, "at")
    return ops.StepFinished(seq, run_id, step, attempt, str(msg.status), output, error, at)


def _result(
    seq: int, run_id: str, step: str, attempt: int, delivery: int, msg: schemas.StepResult
) -> ops.Result:
    ok = v.flag(msg.ok, "ok")
    handed_back = v.flag(msg.handed_back, "handed_back")
    error = v.opt_text(msg.error, "error")
    if handed_back:
        status, error = RunStatus.CANCELLED, error or ops.HANDED_BACK
    else:
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
    worker_id = v.text(msg.worker_id, "worker_id")
    at = v.timestamp(msg.finished_at, "finished_at")
    output = v.json_text(msg.output) if ok or msg.output is not None else None
    # The assignment it carries (older results carry none: an assigned came before them).
    worker_name = v.text(msg.worker_name, "worker_name") or None
    started_at = None if msg.started_at is None else v.timestamp(msg.started_at, "started_at")
    return ops.Result(
        seq, run_id, step, attempt, delivery, worker_id, str(status), at, error, output,
        handed_back, worker_name, started_at,
    )  # fmt: skip


def _cron(seq: int, parsed: ParsedSubject, msg: Any) -> ops.CronChange:
    """A cron's record, its values checked in a fixed order."""
    ns, name = parsed.scope.namespace, v.text(parsed.name, "name")
    match msg:
        case CronCreated():
            return ops.CronChange(
                seq, ns, name, "created", v.text(msg.id, "id"),
                v.timestamp(msg.created_at, "created_at"),
                workflow=v.text(msg.workflow, "workflow"),
                expression=v.text(msg.expression, "expression"),
                timezone=v.opt_text(msg.timezone, "timezone"),
                input=v.json_text(msg.input),
            )  # fmt: skip
        case CronArmed():
            fire_at = v.timestamp(msg.fire_at, "fire_at")
            return ops.CronChange(
                seq, ns, name, "armed", v.text(msg.id, "id"), v.timestamp(msg.at, "at"),
                fire_at=fire_at,
            )  # fmt: skip
        case CronFired():
            return ops.CronChange(
                seq, ns, name, "fired", v.text(msg.id, "id"), v.timestamp(msg.at, "at"),
                fire_at=v.timestamp(msg.fire_at, "fire_at"), run_id=v.text(msg.run_id, "run_id"),
            )  # fmt: skip
        case CronRejected():
            return ops.CronChange(
                seq, ns, name, "rejected", v.text(msg.id, "id"), v.timestamp(msg.at, "at"),
                reason=v.text(msg.reason, "reason"),
            )  # fmt: skip
        case _:
            return ops.CronChange(seq, ns, name, "deleted", None, v.timestamp(msg.at, "at"))


def _schedule(seq: int, parsed: ParsedSubject, msg: Any) -> ops.ScheduleChange:
    """A scheduled run's record. A ``created`` whose time does not parse is kept, without a
    time (the dispatcher rejects it, and that rejection is recorded too)."""
    ns, sid = parsed.scope.namespace, v.text(parsed.name, "schedule id")
    match msg:
        case ScheduleCreated():
            try:
                trigger_at: dt.datetime | None = v.timestamp(msg.trigger_at, "trigger_at")
            except DecodeError:
                trigger_at = None
            return ops.ScheduleChange(
                seq, ns, sid, "created", v.timestamp(msg.created_at, "created_at"),
                workflow=v.text(msg.workflow, "workflow"), trigger_at=trigger_at,
                input=v.json_text(msg.input),
            )  # fmt: skip
        case ScheduleFired():
            return ops.ScheduleChange(
                seq, ns, sid, "fired", v.timestamp(msg.at, "at"),
                run_id=v.text(msg.run_id, "run_id"),
            )  # fmt: skip
        case ScheduleRejected():
            return ops.ScheduleChange(
                seq, ns, sid, "rejected", v.timestamp(msg.at, "at"),
                reason=v.text(msg.reason, "reason"),
            )  # fmt: skip
        case _:
            return ops.ScheduleChange(seq, ns, sid, "deleted", v.timestamp(msg.at, "at"))
