"""What ``natchet audit`` shows: a run's history, or an event's and the runs it
started, read from the JetStream log and never from Postgres, so it answers with the read
model stopped or wiped.

Who appended a message is known from its kind: the dispatcher decides (``created``,
``rejected``, ``queued``, ``task``, ``retry_scheduled``, ``step_finished``, ``finished``,
and ``woken``, which ends a durable step's wait), a worker reports (``assigned``, ``log``,
``result``, and ``waiting``, a durable step's wait: its id and name are in the body; a log
line names its attempt, whose worker the attempt's ``assigned``, ``result`` or ``waiting``
names), a client asks (``requested``, ``cancel_requested``). An event's publisher is not recorded:
NATS keeps no sender identity with a stored message.

Reading a run costs: its own messages (direct gets of ``runs.<id>.>``: the server's subject
index, not a scan), its triggering event (one direct get by sequence), and the tasks of its
workflow stored while it ran, filtered here by run id (a scan of that workflow's tasks in
that window: cheap for a short run, more for one that waited long among many others), and
likewise the namespace's run requests of that window, for the children its steps spawned
(a child's own history names its parent in its ``created``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import attrs
import orjson

from eventstore import (
    Connection,
    Record,
    direct_get,
    direct_history,
    direct_last,
    last_seq,
    replay,
)
from projector.fold import Fold
from projector.plan import plan, waiting_for
from projector.queries import held_by
from schemas.codec import DecodeError, decode_as, decode_json, decode_subject
from schemas.durable import StepWaiting, StepWoken, WaitKind
from schemas.holds import StepHeld
from schemas.messages import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    StepAssigned,
    StepFinished,
    StepLog,
    StepQueued,
    StepResult,
    StepRetryScheduled,
    Task,
    TriggerKind,
    WorkflowDef,
)
from schemas.subjects import Scope, SubjectError, parse, stream_name

DISPATCHER = "dispatcher"
WORKER = "worker"
CLIENT = "client"
PUBLISHER = "publisher"
NOT_RECORDED = "not recorded by NATS (the log keeps no sender identity)"
ENDS = ("finished", "rejected")
# A run id is one subject token: no separators, no wildcards, no spaces.
RUN_ID_RE = re.compile(r"^[^.*>\s]{1,128}$")
SUMMARY_CHARS = 72


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise SubjectError(f"invalid run id {run_id!r}: one subject token, no '.', '*' or '>'")
    return run_id


# -- entries: one stored message as the audit shows it ---------------------------------


def iso_time(when: dt.datetime | None) -> str | None:
    return when.isoformat(timespec="microseconds") if when else None


def short(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."


def actor_of(role: str, worker_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    actor: dict[str, Any] = {"role": role}
    if role == WORKER:
        actor.update(id=worker_id or None, name=name or None)
    if role == PUBLISHER:
        actor["identity"] = NOT_RECORDED
    return actor


def body_of(data: bytes) -> Any:
    try:
        return decode_json(data)
    except DecodeError:
        return data.decode("utf-8", "replace")


def entry(record: Record, message: Any) -> dict[str, Any]:
    """The audit line of one stored message (``message``: what it decoded to, or the
    :class:`DecodeError` it did not)."""
    parsed = parse(record.subject)
    kind = "event" if parsed.area == "events" else "task" if parsed.area == "tasks" else ""
    e: dict[str, Any] = {
        "seq": record.seq,
        "time": iso_time(record.time),
        "kind": kind or parsed.run_kind,
        "subject": record.subject,
        "actor": None,
        "step": None,
        "attempt": None,
        "delivery": None,
        "summary": "",
        "error": None,
        "traceback": None,
    }
    if parsed.area == "events":  # any bytes: a body that is not JSON shows as text
        payload = short(body_of(record.data))
        e.update(actor=actor_of(PUBLISHER), summary=f"event {parsed.event_key}, payload {payload}")
    elif isinstance(message, DecodeError):
        e.update(summary="(a message this version cannot read)", error=str(message))
    elif hasattr(message, "step"):
        e.update(step=message.step, attempt=message.attempt)
        e["delivery"] = getattr(message, "delivery", None)
        e.update(_about_step(message))
    else:
        e.update(_about_run(message))
    return e


def cause(created: RunCreated) -> str:
    """What started a run, as the end of a sentence ("" for a plain request)."""
    by = created.trigger
    if by is None:
        return ""
    if by.kind is TriggerKind.EVENT:
        return f" by event {by.event_id} ({by.event_key})"
    if by.kind is TriggerKind.CHILD:
        return f" as a child of run {by.run_id} (step {by.step}, key {by.key})"
    start = f" from step {by.from_step}" if by.from_step else ""
    kept = f", keeping {', '.join(sorted(created.kept))}" if created.kept else ""
    return f" as a replay of run {by.run_id}{start}{kept}"


def _keyed(created: RunCreated) -> str:
    """A run's concurrency key, as the end of its ``created`` line ("" without one)."""
    spec, key = created.concurrency, created.concurrency_key
    if spec is None or key is None:
        return ""
    return f"; concurrency key {key!r} (max_runs {spec.max_runs}, {spec.limit_strategy})"


def _about_run(m: Any) -> dict[str, Any]:
    match m:
        case RunRequested() if m.trigger is not None and m.trigger.kind is TriggerKind.CHILD:
            by = m.trigger
            summary = (
                f"child run {m.run_id} of {m.workflow} requested by run {by.run_id}, "
                f"step {by.step}, key {by.key}, input {short(m.input)}"
            )
            return {"actor": actor_of(WORKER), "summary": summary}
        case RunRequested() if m.replay_of:
            start = f" from step {m.from_step}" if m.from_step else ""
            summary = f"replay of run {m.replay_of}{start} requested"
            return {"actor": actor_of(CLIENT), "summary": summary}
        case RunRequested():
            return {
                "actor": actor_of(CLIENT),
                "summary": f"run of {m.workflow} requested, input {short(m.input)}",
            }
        case RunCancelRequested():
            reason = f": {m.reason}" if m.reason else ""
            return {"actor": actor_of(CLIENT), "summary": f"cancel requested{reason}"}
        case RunCreated():
            steps = ", ".join(s.name for s in m.steps)
            summary = f"run of {m.workflow} created{cause(m)}; steps {steps}{_keyed(m)}"
            return {"actor": actor_of(DISPATCHER), "summary": summary}
        case RunRejected():
            summary = f"run of {m.workflow} rejected"
            return {"actor": actor_of(DISPATCHER), "summary": summary, "error": m.reason}
        case RunFinished():
            verdicts = [
                {
                    "step": v.step,
                    "attempt": v.attempt,
                    "delivery": v.delivery,
                    "status": v.status.value,
                    "error": v.error,
                }
                for v in m.steps
            ]
            said = "; ".join(f"{v['step']} {v['status']}" for v in verdicts)
            return {
                "actor": actor_of(DISPATCHER),
                "summary": f"run {m.status.value}" + (f" (steps: {said})" if said else ""),
                "error": m.error,
                "verdicts": verdicts,
            }
    return {"summary": f"({type(m).__name__})"}


def _about_step(m: Any) -> dict[str, Any]:
    match m:
        case StepQueued():
            return {"actor": actor_of(DISPATCHER), "summary": "step queued"}
        case Task():
            deadline = f", pick up by {m.schedule_deadline}" if m.schedule_deadline else ""
            summary = f"task offered to {m.workflow}'s workers{deadline}"
            if m.wakes:
                summary = (
                    f"task offered again to {m.workflow}'s workers after {len(m.wakes)}"
                    f" wait(s) woken, deliveries counted from {m.delivery_offset + 1}{deadline}"
                )
            if m.moves:
                where = f"worker {m.worker_id}" if m.worker_id else f"{m.workflow}'s workers"
                summary = (
                    f"task moved off worker {m.moved_from} (gone or stopping) and offered again"
                    f" to {where}, same attempt, deliveries counted from"
                    f" {m.delivery_offset + 1}{deadline}"
                )
            elif m.worker_id:
                summary += f" (placed on worker {m.worker_id})"
            return {"actor": actor_of(DISPATCHER), "summary": summary}
        case StepWaiting():
            summary = f"wait {m.index}: waiting for {waiting_for(m.conditions)}; slot given back"
            return {"actor": actor_of(WORKER, m.worker_id, m.worker_name), "summary": summary}
        case StepWoken():
            return {"actor": actor_of(DISPATCHER), "summary": woken_summary(m)}
        case StepHeld():
            summary = f"held back ({m.kind}): {m.reason}"
            if m.moves:
                summary = f"task moved off worker {m.moved_from}, {summary}"
            return {"actor": actor_of(DISPATCHER), "summary": summary}
        case StepAssigned():
            actor = actor_of(WORKER, m.worker_id, m.worker_name)
            return {"actor": actor, "summary": f"started at {m.started_at}"}
        case StepLog():
            # Whose: the attempt's ``assigned`` or ``result`` says (``entries``).
            return {"actor": actor_of(WORKER), "summary": m.line}
        case StepResult():
            if m.ok:
                summary = f"succeeded, output {short(m.output)}"
            elif m.handed_back:
                summary = "handed back unfinished"
            else:
                summary = "failed" + (" (non-retryable)" if m.non_retryable else "")
            actor = actor_of(WORKER, m.worker_id, m.worker_name)
            return {"actor": actor, "summary": summary, "error": m.error, "traceback": m.traceback}
        case StepRetryScheduled():
            summary = f"attempt {m.next_attempt} due at {m.due_at}"
            return {"actor": actor_of(DISPATCHER), "summary": summary, "error": m.error}
        case StepFinished():
            summary = f"step {m.status.value}"
            return {"actor": actor_of(DISPATCHER), "summary": summary, "error": m.error}
    return {"summary": f"({type(m).__name__})"}


def woken_summary(m: StepWoken) -> str:
    """Which condition ended a wait: the sleep that came due, or the event heard."""
    said = f"wait {m.index} woken by its condition {m.condition}: "
    if m.kind is WaitKind.SLEEP:
        return said + "the sleep came due"
    return said + f"event {m.event_id} ({m.event_key}), payload {short(m.payload)}"


def decoded(record: Record) -> Any:
    try:
        return decode_subject(parse(record.subject), record.data)
    except (DecodeError, SubjectError) as exc:
        return DecodeError(str(exc))


class Attempts:
    """Who ran each attempt ``(step, attempt, delivery)``: from its ``assigned``, else from
    its ``result`` (a fast step has no ``assigned``: its result carries the assignment), or
    its ``waiting`` (a durable step's delivery that waited: it ends SUSPENDED)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int], dict[str, Any]] = {}

    def _row(self, m: StepAssigned | StepResult | StepWaiting) -> dict[str, Any]:
        key = (m.step, m.attempt, m.delivery)
        if key not in self.rows:
            self.rows[key] = {
                "step": m.step,
                "attempt": m.attempt,
                "delivery": m.delivery,
                "worker_id": m.worker_id,
                "worker_name": m.worker_name or None,
                "started_at": None,
                "finished_at": None,
                "status": "RUNNING",
                "error": None,
                "assignment_from": None,
            }
        return self.rows[key]

    def add(self, message: Any) -> None:
        if isinstance(message, StepAssigned):
            row = self._row(message)
            row.update(
                started_at=message.started_at,
                worker_name=message.worker_name,
                assignment_from="assigned",
            )
        elif isinstance(message, StepResult):
            row = self._row(message)
            if row["assignment_from"] is None:
                row.update(
                    started_at=message.started_at,
                    worker_name=message.worker_name or None,
                    assignment_from="result",
                )
            status = "SUCCEEDED" if message.ok else "FAILED"
            status = "HANDED_BACK" if message.handed_back else status
            row.update(finished_at=message.finished_at, status=status, error=message.error)
        elif isinstance(message, (Task, StepHeld)) and message.moves:
            for row in self.rows.values():  # its worker went: what still ran there is lost
                same = (row["step"], row["attempt"]) == (message.step, message.attempt)
                if same and row["status"] == "RUNNING":
                    why = f"no result: its worker went, the task moved off {message.moved_from}"
                    row.update(status="LOST", error=why)
        elif isinstance(message, StepWaiting):  # the delivery waited: it ends suspended
            row = self._row(message)
            if row["assignment_from"] is None:
                row.update(worker_name=message.worker_name or None, assignment_from="waiting")
            row.update(finished_at=message.at, status="SUSPENDED")

    def who(self, e: dict[str, Any]) -> dict[str, Any] | None:
        row = self.rows.get((e["step"], e["attempt"], e["delivery"]))
        if row is None:
            return None
        return actor_of(WORKER, row["worker_id"], row["worker_name"])


def entries(pairs: Iterable[tuple[Record, Any]]) -> tuple[list[dict[str, Any]], Attempts]:
    attempts = Attempts()
    out = []
    for record, message in pairs:
        attempts.add(message)
        out.append(entry(record, message))
    for e in out:  # a log line's worker is its attempt's
        if e["kind"] == "log" and (who := attempts.who(e)) is not None:
            e["actor"] = who
    return out, attempts


def run_summary(run_id: str, scope: Scope, pairs: list[tuple[Record, Any]]) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": run_id,
        "tenant": scope.tenant,
        "namespace": scope.namespace,
        "workflow": None,
        "status": "REQUESTED",
        "error": None,
        "triggered_by": None,
        "replay_of": None,
        "parent": None,
        "children": [],
        "source": f"JetStream log {stream_name(scope.tenant)}",
    }
    for _record, m in pairs:
        match m:
            case RunRequested() if m.run_id != run_id:  # a child this run's step spawned
                by = m.trigger
                if by is not None and m.run_id not in {c["id"] for c in run["children"]}:
                    child = {"id": m.run_id, "workflow": m.workflow, "step": by.step}
                    run["children"].append({**child, "key": by.key})
            case RunRequested():
                run["workflow"] = m.workflow
            case RunCreated():
                run.update(workflow=m.workflow, status="QUEUED")
                by = m.trigger
                if by is not None and by.kind is TriggerKind.EVENT:
                    run["triggered_by"] = {"event_key": by.event_key, "event_id": by.event_id}
                elif by is not None and by.kind is TriggerKind.REPLAY:
                    run["replay_of"] = {"run_id": by.run_id, "from_step": by.from_step}
                elif by is not None and by.kind is TriggerKind.CHILD:
                    run["parent"] = {"run_id": by.run_id, "step": by.step, "key": by.key}
            case StepAssigned() | StepResult() | StepWaiting() if run["status"] == "QUEUED":
                run["status"] = "RUNNING"
            case RunRejected():
                run.update(workflow=m.workflow, status="REJECTED", error=m.reason)
            case RunFinished():
                run.update(status=m.status.value, error=m.error)
    return run


# -- reading the log -----------------------------------------------------------------


class RunNotFoundError(Exception):
    pass


async def _run_records(
    nc: Connection, tenant: str, run_id: str, namespace: str | None, end: int
) -> tuple[Scope, list[Record]]:
    ns = namespace or "*"
    found = [
        r
        async for r in direct_history(nc, tenant, f"{tenant}.{ns}.runs.{run_id}.>")
        if r.seq <= end
    ]
    namespaces = sorted({r.subject.split(".")[1] for r in found})
    if not found:
        raise RunNotFoundError
    if len(namespaces) > 1:
        raise SubjectError(
            f"run {run_id} has messages in namespaces {', '.join(namespaces)}: pass --namespace"
        )
    return Scope(tenant, namespaces[0]), found


async def read_run(
    nc: Connection, tenant: str, run_id: str, namespace: str | None
) -> tuple[Scope, list[tuple[Record, Any]], int]:
    """The run's messages, its tasks and its triggering event, in log order, through the
    log's last sequence when the read began (returned)."""
    end = await last_seq(nc, tenant)
    scope, own = await _run_records(nc, tenant, run_id, namespace, end)
    pairs = [(r, decoded(r)) for r in own]
    records = {r.seq: (r, m) for r, m in pairs}
    workflow = next((m.workflow for _r, m in pairs if isinstance(m, RunCreated)), None)
    created = next((m for _r, m in pairs if isinstance(m, RunCreated)), None)
    if workflow is not None:
        ended = any(r.subject.rsplit(".", 1)[-1] in ENDS for r in own)
        until = own[-1].seq if ended else end
        async for r in replay(
            nc, tenant, [scope.tasks_filter(workflow)], start_seq=own[0].seq, until_seq=until
        ):
            m = decoded(r)
            if isinstance(m, Task) and m.run_id == run_id:
                records[r.seq] = (r, m)
        for r, m in await _spawned(nc, scope, run_id, own[0].seq, until):
            records[r.seq] = (r, m)
    by = None if created is None else created.trigger
    if by is not None and by.kind is TriggerKind.EVENT and by.event_id is not None:
        event = await event_record(nc, tenant, by.event_id)
        if event is not None:
            records[event.seq] = (event, decoded(event))
    return scope, [records[seq] for seq in sorted(records)], end


async def _spawned(
    nc: Connection, scope: Scope, run_id: str, start: int, until: int
) -> list[tuple[Record, RunRequested]]:
    """The requests for children of ``run_id`` (a step can spawn only while its run is in
    flight): a scan of the namespace's run requests in the run's window, as for its tasks."""
    found = []
    subjects = [f"{scope.prefix}.runs.*.requested"]
    async for r in replay(nc, scope.tenant, subjects, start_seq=start, until_seq=until):
        m = decoded(r)
        by = m.trigger if isinstance(m, RunRequested) else None
        if by is not None and by.kind is TriggerKind.CHILD and by.run_id == run_id:
            found.append((r, m))
    return found


async def event_record(nc: Connection, tenant: str, event_id: str | int) -> Record | None:
    try:
        seq = int(event_id)
    except ValueError:
        return None
    record = await direct_get(nc, tenant, seq)
    if record is None or ".events." not in record.subject:
        return None
    return record


async def runs_of_event(nc: Connection, scope: Scope, key: str, seq: int) -> list[dict[str, Any]]:
    """The runs event ``seq`` started: a run's id derives from the event's sequence and its
    workflow's name, so each workflow ever registered for ``key`` names one candidate,
    looked up by direct gets (no scan of the runs)."""
    from dispatcher.decide import event_run_id

    names: set[str] = set()
    async for r in replay(nc, scope.tenant, [f"{scope.prefix}.workflows.*"]):
        try:
            wf = decode_as(WorkflowDef, WorkflowDef.KIND, r.data)
        except DecodeError:
            continue
        if key in wf.on_events:
            names.add(wf.name)
    runs = []
    for name in sorted(names):
        run_id = event_run_id(scope, seq, name)
        created = await direct_last(nc, scope.tenant, scope.run(run_id, "created"))
        if created is None:
            continue
        finished = await direct_last(nc, scope.tenant, scope.run(run_id, "finished"))
        status = "RUNNING"
        if finished is not None:
            status = decode_as(RunFinished, RunFinished.KIND, finished.data).status.value
        runs.append({"id": run_id, "workflow": name, "status": status, "created_seq": created.seq})
    return runs


# -- time travel ---------------------------------------------------------------------------


def as_of(
    tenant: str,
    run_id: str,
    records: Iterable[Record],
    *,
    seq: int | None = None,
    time: dt.datetime | None = None,
) -> dict[str, Any] | None:
    """The run as the read model held it once the log was applied through ``seq`` (or
    through the last message stored at or before ``time``): the run's records folded by the
    projector's own rules (``projector.plan``, ``projector.fold``), in memory. ``None`` if
    the run did not exist yet."""
    fold = Fold((), (), ())
    through = 0
    for record in sorted(records, key=lambda r: r.seq):
        if (seq is not None and record.seq > seq) or (
            time is not None and (record.time is None or record.time > time)
        ):
            break
        through = record.seq
        for op in plan(tenant, record):
            fold.apply(op)
    run = fold.runs.get(run_id)
    if run is None:
        return None
    attempts = fold.attempts.get(run_id, {})
    waits = fold.waits.get(run_id, {})
    steps = []
    for step in fold.steps.get(run_id, {}).values():
        row = _row(step)
        row["attempts"] = [_row(a) for key, a in sorted(attempts.items()) if key[0] == step.name]
        row["waits"] = [_row(w) for key, w in sorted(waits.items()) if key[0] == step.name]
        steps.append(row)
    out = _row(run)
    out["waiting_for"] = held_by({**out, "steps": steps})  # what holds it, as get_run says
    return {"as_of": {"seq": through}, "run": out, "steps": steps}


def _row(row: Any) -> dict[str, Any]:
    out = attrs.asdict(row)
    out.pop("dirty", None)
    for key in ("input", "output", "conditions", "payload", "concurrency"):  # JSON text
        if isinstance(out.get(key), str):
            out[key] = decode_json(out[key].encode())
    return out
