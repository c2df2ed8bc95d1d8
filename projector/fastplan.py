"""Planning the common run messages straight from their decoded JSON: what a rebuild
plans a million times (:mod:`projector.rebuild`).

:func:`plan_fast` gives the same operations as :func:`projector.plan.plan`, without
building the message's attrs classes (``schemas.structure`` and its converters) and so
without reading every value twice: ~4 us of the ~24 us a rebuild spent on a message
(docs/benchmarks.md, issue 10). It takes only the usual case: a subject of a known scope in
``tenant``, a body that is a JSON object of the current version (nothing to upcast), every
field the message's class requires present, the body's run id (or task) the subject's,
every field of its JSON type (:func:`schemas.fieldtypes.check`, as decoding checks it),
every value passing :mod:`projector._values`, and no feature it does not plan (a trigger
other than an event or a replay, additional metadata, an on-success step). Anything else
(events, workflows, requests, old versions, a value of the wrong type, a check that fails)
goes to ``plan``, which decodes it the general way and records a rejection when it must: a
rejection's reason is always the general path's. ``tests/unit/test_fastplan.py`` plans the
same records both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import orjson

import schemas
from eventstore import Record
from projector import _values as v
from projector import ops
from projector.plan import plan
from schemas import RunStatus, StepDef, Trigger
from schemas.fieldtypes import check
from schemas.subjects import known_scope
from schemas.upcast import UPCASTERS

Body = dict[str, Any]
# A planner of one kind: (seq, run id, namespace, body) -> the operations. Any exception means "not
# the usual case": the record goes to the general path.
Planner = Callable[[int, str, str, Body], list[ops.Op]]

_STATUSES = {s.value: s for s in RunStatus}
_SUCCEEDED = RunStatus.SUCCEEDED


def _required(cls: type) -> frozenset[str]:
    """The fields ``cls`` has no default for: a body without one is not structured."""
    return frozenset(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING)


class _NotUsual(Exception):
    """Raised inside the fast path: leave this record to :func:`plan`."""


def _queued(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
    return [ops.Queued(seq, run_id, step, attempt, v.timestamp(b["queued_at"], "queued_at"))]


def _assigned(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
    delivery = v.count(b["delivery"], "delivery")
    worker_id, name = v.text(b["worker_id"], "worker_id"), v.text(b["worker_name"], "worker_name")
    at = v.timestamp(b["started_at"], "started_at")
    return [ops.Assigned(seq, run_id, step, attempt, delivery, worker_id, name, at)]


def _log(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
    delivery = v.count(b["delivery"], "delivery")
    line, at = v.text(b["line"], "line"), v.timestamp(b["at"], "at")
    return [ops.Log(seq, run_id, step, attempt, delivery, line, at)]


def _result(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
    delivery = v.count(b["delivery"], "delivery")
    ok = v.flag(b["ok"], "ok")
    handed_back = v.flag(b.get("handed_back", False), "handed_back")
    error = v.opt_text(b.get("error"), "error")
    if handed_back:
        status, error = RunStatus.CANCELLED, error or ops.HANDED_BACK
    else:
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
    worker_id = v.text(b["worker_id"], "worker_id")
    at = v.timestamp(b["finished_at"], "finished_at")
    out = b.get("output")
    output = v.json_text(out) if ok or out is not None else None
    worker_name = v.text(b.get("worker_name", ""), "worker_name") or None
    started = b.get("started_at")
    started_at = None if started is None else v.timestamp(started, "started_at")
    return [
        ops.Result(
            seq, run_id, step, attempt, delivery, worker_id, str(status), at, error, output,
            handed_back, worker_name, started_at,
        )
    ]  # fmt: skip


def _verdict(seq: int, run_id: str, b: Body) -> ops.StepFinished:
    """A ``step_finished`` body (or one of ``finished``'s ``steps``) as its operation."""
    if not b.keys() >= _STEP_FINISHED_REQUIRED:
        raise _NotUsual
    status = _STATUSES[b["status"]]
    step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
    out = b.get("output")
    output = v.json_text(out) if status == _SUCCEEDED or out is not None else None
    error, at = v.opt_text(b.get("error"), "error"), v.timestamp(b["at"], "at")
    return ops.StepFinished(seq, run_id, step, attempt, str(status), output, error, at)


def _step_finished(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    return [_verdict(seq, run_id, b)]


def _finished(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    status = _STATUSES[b["status"]]
    steps = b.get("steps", ())
    if type(steps) is not list and steps != ():
        raise _NotUsual
    verdicts: list[ops.Op] = []
    for s in steps:
        if type(s) is not dict:
            raise _NotUsual
        check(schemas.StepFinished, s)
        verdicts.append(_verdict(seq, run_id, s))
    error, at = v.opt_text(b.get("error"), "error"), v.timestamp(b["at"], "at")
    return [*verdicts, ops.Finished(seq, run_id, str(status), status.terminal, error, at)]


def _retry(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    step = v.text(b["step"], "step")
    v.count(b["attempt"], "attempt")
    next_attempt = v.count(b["next_attempt"], "next_attempt")
    due_at = v.timestamp(b["due_at"], "due_at")
    error = v.opt_text(b.get("error"), "error")
    return [ops.RetryScheduled(seq, run_id, step, next_attempt, due_at, error)]


def _rejected(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    workflow, reason = v.text(b["workflow"], "workflow"), v.text(b["reason"], "reason")
    return [ops.Rejected(seq, run_id, ns, workflow, reason, v.timestamp(b["at"], "at"))]


def _step_def(value: Any) -> tuple[str, list[str]]:
    """A step of ``created``: its name and parents, as ``StepDef`` would hold them."""
    if type(value) is not dict or "name" not in value or value.get("rate_limits", []) != []:
        raise _NotUsual  # a step with rate limits: plan() checks them
    check(StepDef, value)
    if value.get("desired_worker_labels", {}) != {}:
        raise _NotUsual  # a step wanting labels (issue 15): plan() checks them
    parents = value.get("parents", [])
    if type(parents) is not list:
        raise _NotUsual
    return value["name"], parents


def _created(seq: int, run_id: str, ns: str, b: Body) -> list[ops.Op]:
    by = b.get("trigger")
    kind = None
    if by is not None:
        if type(by) is not dict or by.get("kind") not in ("event", "replay"):
            raise _NotUsual
        check(Trigger, by)
        kind = by["kind"]
    if b.get("on_success") is not None or b.get("additional_metadata", {}) != {}:
        raise _NotUsual  # planned by plan(), like child, cron and scheduled runs
    workflow = v.text(b["workflow"], "workflow")
    version = v.text(b["workflow_version"], "workflow_version")
    input_ = v.json_text(b["input"])
    event_key = v.text(by.get("event_key"), "event_key") if by and kind == "event" else None
    event_id = v.text(by.get("event_id"), "event_id") if by and kind == "event" else None
    replay_of = v.text(by.get("run_id"), "run_id") if by and kind == "replay" else None
    from_step = v.opt_text(by.get("from_step"), "from_step") if by and kind == "replay" else None
    created_at = v.timestamp(b["created_at"], "created_at")
    kept = v.mapping(b.get("kept", {}), "kept")
    raw_steps = b["steps"]
    if type(raw_steps) is not list:
        raise _NotUsual
    defs = [(*_step_def(s), False) for s in raw_steps]
    on_failure = b.get("on_failure")
    if on_failure is not None:
        defs.append((*_step_def(on_failure), True))
    steps = tuple(
        ops.NewStep(
            v.text(name, "step name"),
            v.text_array([] if failure else v.texts(parents, "parents")),
            failure,
            v.json_text(kept[name]) if name in kept and not failure else None,
        )
        for name, parents, failure in defs
    )
    return [
        ops.Created(
            seq, run_id, ns, workflow, version, input_, event_key, event_id, created_at, steps,
            replay_of, from_step,
        )
    ]  # fmt: skip


# Run messages by kind: (planner, fields the class requires, the class).
_RUN: dict[str, tuple[Planner, frozenset[str], type]] = {
    cls.KIND: (planner, _required(cls), cls)
    for cls, planner in (
        (schemas.StepQueued, _queued),
        (schemas.StepAssigned, _assigned),
        (schemas.StepLog, _log),
        (schemas.StepResult, _result),
        (schemas.StepFinished, _step_finished),
        (schemas.RunFinished, _finished),
        (schemas.StepRetryScheduled, _retry),
        (schemas.RunRejected, _rejected),
        (schemas.RunCreated, _created),
    )
}
_STEP_FINISHED_REQUIRED = _required(schemas.StepFinished)
_TASK_REQUIRED = _required(schemas.Task)
_TASK_KIND = schemas.Task.KIND


def _body(kind: str, data: bytes) -> Body:
    """The body as a dict, if it is an object of a version nothing upcasts."""
    body = orjson.loads(data)
    if type(body) is not dict:
        raise _NotUsual
    version = body.get("v", 1)
    if type(version) is not int or (kind, version) in UPCASTERS:
        raise _NotUsual
    return body


def _offset(b: Body) -> Any:
    """A task's delivery offset, if an int (else a value that is not 0)."""
    offset = b.get("delivery_offset", 0)
    return offset if type(offset) is int else None


def _step_concurrency(b: dict[str, Any]) -> bool:
    """Whether a ``created`` names a step with a ``concurrency`` (issue 15)."""
    steps = b.get("steps")
    specs = [*(steps if isinstance(steps, list) else []), b.get("on_failure"), b.get("on_success")]
    return any(isinstance(s, dict) and s.get("concurrency") is not None for s in specs)


def _fast(tenant: str, record: Record) -> list[ops.Op]:
    subject = record.subject
    parts = subject.split(".")
    if parts[0] != tenant or "\x00" in subject or known_scope(parts[0], parts[1]) is None:
        raise _NotUsual
    area = parts[2]
    if area == "runs" and len(parts) == 5:
        run_id, kind = parts[3], parts[4]
        planner, required, cls = _RUN[kind]
        b = _body(kind, record.data)
        if not required <= b.keys() or b["run_id"] != run_id:
            raise _NotUsual
        if kind == "created" and (b.get("concurrency"), b.get("concurrency_key")) != (None, None):
            raise _NotUsual  # a run with a concurrency key: plan() checks and keeps it
        if kind == "created" and _step_concurrency(b):
            raise _NotUsual  # a step with its own concurrency: plan() checks it
        if kind == "created" and b.get("priority") is not None:
            raise _NotUsual  # a prioritized run: plan() checks and keeps its priority
        check(cls, b)
        return planner(record.seq, run_id, parts[1], b)
    if area == "tasks" and len(parts) >= 4:
        b = _body(_TASK_KIND, record.data)
        if not b.keys() >= _TASK_REQUIRED or b.get("wakes", []) != [] or _offset(b) != 0:
            raise _NotUsual  # a durable step's task again after a wait: plan() checks it
        if b.get("worker_id") is not None or b.get("moves", 0) != 0:
            raise _NotUsual  # placed on one worker, or moved (issue 15): plan() checks it
        if b.get("rate_limits", []) != []:
            raise _NotUsual  # what it took of rate limits: plan() checks it
        check(schemas.Task, b)
        if f"{b['workflow']}.{b['step']}" != ".".join(parts[3:]):
            raise _NotUsual
        step, attempt = v.text(b["step"], "step"), v.count(b["attempt"], "attempt")
        return [
            ops.Queued(
                record.seq, v.text(b["run_id"], "run_id"), step, attempt,
                v.timestamp(b["queued_at"], "queued_at"),
            )
        ]  # fmt: skip
    raise _NotUsual


def plan_fast(tenant: str, record: Record) -> list[ops.Op]:
    """:func:`projector.plan.plan`'s operations for ``record``: by the fast path when the
    record is the usual case, else by ``plan`` itself."""
    try:
        return _fast(tenant, record)
    except Exception:  # not the usual case (a check failed, a field missing...): see plan
        return plan(tenant, record)
