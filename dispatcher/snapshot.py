"""The dispatcher's state as bytes, with the stream sequence it covers. Pure: no IO.

A snapshot taken at sequence ``S`` (``seq``) holds the fold of the log up to some ``X >=
S``: every message up to ``S``, and perhaps later ones (the dispatcher's own outputs, and
inputs it decided that the ack floor does not count yet). Loading it and folding the log
from ``S + 1`` folds the messages between ``S`` and ``X`` a second time, later than the
first: folding is idempotent, and insensitive to such duplicates
(``tests/property/test_fold.py``), so the result is the full rebuild's state, minus the
finished runs the dispatcher chose to forget (below). ``tests/property/test_snapshot.py``
checks exactly this. (Folding is not insensitive to every reordering: a verdict folded
before the task it answers loses the task's time. A snapshot holds what the live state
holds, which folded the log in the order the dispatcher met it: the order a plain restart
already relies on, assignments landing before decisions included.)

Why the service's ``S`` is right (``dispatcher.service``):

- After a rebuild that read the log to ``L`` (its end when the rebuild started), the state
  is the fold of every message up to ``L``: ``S = L``.
- While deciding, the service folds every message its consumer delivers before acking it:
  an input with its decision, anything else (a message a previous dispatcher stored but
  this one did not write) as it is, its own outputs when it stores them. The consumer
  reads the whole log, unfiltered, in order; its ack floor ``F`` (read from the server)
  means every message up to ``F`` was acked, by this dispatcher (so folded) or by one
  before it, which had stopped before this one's rebuild read the log to ``L``, so
  ``F <= L`` for those. The service reads ``F`` between batches, when every output it
  folded is stored and nothing is fetched but not yet acked, and captures the state
  after that read: ``S = max(L, F)``.

Finished runs leave memory: ``done`` keeps the ids of runs that ended, so that a
redelivered event or a repeated request creates nothing twice. An event's run id derives
from the event's sequence, and a run ends after its event; once a run's end is at or below
the ack floor, its event is acked and is never delivered again, and results, assignments
and cancels only touch runs in flight. So the service forgets ids whose end is at or below
the floor, and records in ``forgot_through`` the floor up to which it did; a run request
(its id is the client's, it may come any time) for an id the state does not know is then
checked against the log before anything is created (``Dispatcher``). A consumer whose ack
floor is below ``forgot_through`` (it was recreated, and would deliver old events again)
makes the service ignore the snapshot and rebuild from the start.

The format is versioned (``FORMAT``): a snapshot of another version, or one that does not
decode, raises :class:`SnapshotError`; the service then rebuilds from the start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import orjson

from dispatcher.crons import CronState, ScheduleState, Triggers
from dispatcher.state import RunState, State, StepState, index_deadlines
from schemas.codec import encode
from schemas.concurrency import ConcurrencyDef
from schemas.durable import StepWaiting, wakes
from schemas.errors import NatchetError
from schemas.holds import HoldKind
from schemas.messages import (
    CronCreated,
    RunStatus,
    ScheduleCreated,
    StepDef,
    WorkflowDef,
)
from schemas.ratelimits import RateLimitSet
from schemas.structure import structure
from schemas.subjects import Scope

# 2: crons and scheduled runs (``triggers``); a format-1 snapshot is not used (the
# service rebuilds from the log, which holds them).
FORMAT = 2


class SnapshotError(NatchetError, ValueError):
    """A snapshot that cannot be used: another format version, or not decodable."""


@attrs.frozen
class Snapshot:
    """``state`` holds the fold of every log message up to ``seq``; finished runs whose end
    was at or below ``forgot_through`` were dropped from ``state.done``."""

    seq: int
    state: State
    forgot_through: int = 0


def dump(snapshot: Snapshot) -> bytes:
    """The snapshot as JSON bytes. ``TypeError`` if a run's data is not JSON (it came
    from JSON, so it is)."""
    state = snapshot.state
    body = {
        "format": FORMAT,
        "seq": snapshot.seq,
        "forgot_through": snapshot.forgot_through,
        "workflows": [
            {"tenant": scope.tenant, "namespace": scope.namespace, "def": attrs.asdict(wf)}
            for (scope, _name), wf in state.workflows.items()
        ],
        "runs": [_run(run) for run in state.runs.values()],
        "done": sorted(state.done),
        "triggers": _triggers(state.triggers),
        # Rate limits (``dispatcher.ratelimits``): the static limits set, and what offered
        # tasks took of each limit within its window.
        "rate_limits": [
            {"tenant": scope.tenant, "namespace": scope.namespace, "set": attrs.asdict(m)}
            for (scope, _key), m in state.rate_limits.items()
        ],
        "windows": [
            {
                "tenant": scope.tenant,
                "namespace": scope.namespace,
                "key": key,
                "taken": [[i, when.isoformat(), n, w] for i, (when, n, w) in entries.items()],
            }
            for (scope, key), entries in state.windows.taken.items()
            if entries
        ],
    }
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"the dispatcher's state is not JSON: {exc}") from None


def load(data: bytes) -> Snapshot:
    """The snapshot in ``data``; :class:`SnapshotError` if it is of another format version
    or does not decode."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"snapshot is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SnapshotError("snapshot is not a JSON object")
    if body.get("format") != FORMAT:
        raise SnapshotError(f"snapshot format {body.get('format')!r}, expected {FORMAT}")
    try:
        state = State()
        for w in body["workflows"]:
            wf = structure(WorkflowDef, w["def"])
            state.workflows[(Scope(w["tenant"], w["namespace"]), wf.name)] = wf
        for r in body["runs"]:
            run = _unrun(r)
            state.runs[run.run_id] = run
        state.done = {str(i) for i in body["done"]}
        state.triggers = _untriggers(body["triggers"])
        # Snapshots from before rate limits have neither: no step used one then.
        for r in body.get("rate_limits", ()):
            m = structure(RateLimitSet, r["set"])
            state.rate_limits[(Scope(r["tenant"], r["namespace"]), m.key)] = m
        for w in body.get("windows", ()):
            taken = state.windows.taken[(Scope(w["tenant"], w["namespace"]), str(w["key"]))] = {}
            for i, when, n, window in w["taken"]:
                taken[str(i)] = (dt.datetime.fromisoformat(when), int(n), float(window))
        index_deadlines(state)  # not stored: the runs hold every deadline
        return Snapshot(int(body["seq"]), state, int(body["forgot_through"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"snapshot does not decode: {exc!r}") from None


def _time(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _untime(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _run(run: RunState) -> dict[str, Any]:
    return {
        "tenant": run.scope.tenant,
        "namespace": run.scope.namespace,
        "run_id": run.run_id,
        "workflow": run.workflow,
        "workflow_version": run.workflow_version,
        "input": run.input,
        "schedule_timeout_s": run.schedule_timeout_s,
        "failed_error": run.failed_error,
        "steps": [_step(s) for s in run.steps.values()],
        "parent": run.parent,
        "children": list(run.children),
        "concurrency": None if run.concurrency is None else attrs.asdict(run.concurrency),
        "key": run.key,
        "admitted": run.admitted,
        "metadata": run.metadata,
        "worker": run.worker,
        "priority": run.priority,
        "step_keys": run.step_keys,
    }


def _unrun(r: dict[str, Any]) -> RunState:
    steps = [_unstep(s) for s in r["steps"]]
    return RunState(
        scope=Scope(r["tenant"], r["namespace"]),
        run_id=str(r["run_id"]),
        workflow=str(r["workflow"]),
        workflow_version=str(r["workflow_version"]),
        input=r["input"],
        steps={s.spec.name: s for s in steps},
        schedule_timeout_s=float(r["schedule_timeout_s"]),
        failed_error=r["failed_error"],
        # Snapshots from before child runs have neither: no run had a parent then.
        parent=r.get("parent"),
        children=dict.fromkeys(str(c) for c in r.get("children", [])),
        # Snapshots from before concurrency keys have none: every run was admitted.
        concurrency=None
        if r.get("concurrency") is None
        else structure(ConcurrencyDef, r["concurrency"]),
        key=r.get("key"),
        admitted=bool(r.get("admitted", True)),
        metadata={str(k): str(v) for k, v in r.get("metadata", {}).items()},
        # Snapshots from before placement have none: no run was sticky then.
        worker=r.get("worker"),
        priority=r.get("priority"),  # None in snapshots from before priority
        step_keys={str(k): str(v) for k, v in (r.get("step_keys") or {}).items()},
    )


def _step(s: StepState) -> dict[str, Any]:
    return {
        "spec": attrs.asdict(s.spec),
        "on_failure": s.on_failure,
        "on_success": s.on_success,
        "status": None if s.status is None else s.status.value,
        "attempt": s.attempt,
        "output": s.output,
        "error": s.error,
        "queued_at": _time(s.queued_at),
        "assigned": s.assigned,
        "delivery": s.delivery,
        "handed_back": s.handed_back,
        "handed_back_at": _time(s.handed_back_at),
        "retry_due": _time(s.retry_due),
        "next_attempt": s.next_attempt,
        "waiting": None if s.waiting is None else orjson.loads(encode(s.waiting)),
        "waiting_seq": s.waiting_seq,
        "wakes": [orjson.loads(encode(w)) for w in s.wakes],
        "resumed": s.resumed,
        "held": [str(k) for k in s.held],
        "held_wakes": s.held_wakes,
        "held_reason": s.held_reason,
        "worker": s.worker,
        "moves": s.moves,
        "moved_from": s.moved_from,
        "lost": s.lost,
    }


def _unstep(s: dict[str, Any]) -> StepState:
    return StepState(
        spec=structure(StepDef, s["spec"]),
        on_failure=bool(s["on_failure"]),
        on_success=bool(s.get("on_success", False)),  # snapshots from before on_success
        status=None if s["status"] is None else RunStatus(s["status"]),
        attempt=int(s["attempt"]),
        output=s["output"],
        error=s["error"],
        queued_at=_untime(s["queued_at"]),
        assigned=bool(s["assigned"]),
        delivery=int(s["delivery"]),
        handed_back=int(s["handed_back"]),
        handed_back_at=_untime(s["handed_back_at"]),
        retry_due=_untime(s["retry_due"]),
        next_attempt=int(s["next_attempt"]),
        # Snapshots from before durable steps have none of these: no step waited then.
        waiting=None if s.get("waiting") is None else structure(StepWaiting, s["waiting"]),
        waiting_seq=int(s.get("waiting_seq", 0)),
        wakes=wakes(s.get("wakes", ())),
        resumed=int(s.get("resumed", 0)),
        # Snapshots from before flow control have none: no step was held then.
        held=tuple(HoldKind(k) for k in s.get("held", ())),
        held_wakes=int(s.get("held_wakes", 0)),
        held_reason=s.get("held_reason"),
        # Snapshots from before moved tasks: steps whose worker is not known never move.
        worker=s.get("worker"),
        moves=int(s.get("moves", 0)),
        moved_from=s.get("moved_from"),
        lost=int(s.get("lost", 0)),
    )


def _triggers(t: Triggers) -> dict[str, Any]:
    return {
        "crons": [
            {
                "tenant": scope.tenant,
                "namespace": scope.namespace,
                "spec": attrs.asdict(c.spec),
                "pending": c.pending,
                "last_fire": c.last_fire,
            }
            for (scope, _name), c in t.crons.items()
        ],
        "schedules": [
            {"tenant": scope.tenant, "namespace": scope.namespace, "spec": attrs.asdict(c.spec)}
            for (scope, _id), c in t.schedules.items()
        ],
        "done": sorted(t.done),
    }


def _untriggers(body: dict[str, Any]) -> Triggers:
    t = Triggers(done={str(i) for i in body["done"]})
    for c in body["crons"]:
        spec = structure(CronCreated, c["spec"])
        cron = CronState(spec, c["pending"], c["last_fire"])
        t.crons[(Scope(c["tenant"], c["namespace"]), spec.name)] = cron
    for c in body["schedules"]:
        sched = structure(ScheduleCreated, c["spec"])
        t.schedules[(Scope(c["tenant"], c["namespace"]), sched.schedule_id)] = ScheduleState(sched)
    return t
