"""Folding a batch of operations into row states, in memory: the projection's rules.

A :class:`Fold` starts from the rows the batch can touch as Postgres holds them (every run,
step and attempt of the runs the batch names: :mod:`projector.store` loads them), applies
the operations in the order given, and ends with the rows that changed, each once, in its
final state. Applying the operations one by one to the database, or the fold's changed rows
all at once, gives the same tables: that is the invariant :func:`projector.apply_records`
rests on, and ``tests/projector/test_projector_batch.py`` checks it.

The rules (each a condition on the row as the preceding operations left it):

- Every change sets the row's ``last_seq`` to the operation's ``seq``, and applies only to
  rows whose ``last_seq`` is older, so an operation seen again changes nothing.
- Rows under a run (steps, attempts, log lines) are created only once the run exists in
  the tenant; inserts never overwrite (the first row of a key stays).
- Step statuses: ``PENDING`` (in the DAG or the on-failure step, never queued), then
  ``QUEUED``, ``RUNNING`` and a terminal status. A step keeps its earliest ``queued_at``
  and ``started_at`` over retries and never leaves a terminal status but by its verdict;
  ``attempt`` is its latest and never goes back. A retry with backoff puts it back to
  ``QUEUED`` with the next attempt and ``retry_due_at``; a handed-back task puts it back to
  ``QUEUED`` until another delivery of that attempt is assigned.
- Attempt statuses: ``RUNNING`` once assigned, then ``SUCCEEDED`` or ``FAILED`` from its
  result; ``CANCELLED`` when handed back or when the run ended first; ``LOST`` when a later
  delivery of the same attempt was assigned. A newer result still wins.
- A result that carries its assignment (``started_at``: a fast step's worker appends no
  ``assigned``) is applied as that assignment, then as the result; the attempt's worker
  name and start come from it unless an ``assigned`` already set them (which then wins,
  whichever of the two came first).
- Durable steps: a ``waiting`` of the step's current attempt, while the step is
  ``QUEUED`` or ``RUNNING``, makes the step ``WAITING`` (``waiting_for`` says for what),
  its delivery's attempt row ``SUSPENDED`` (finished at the wait's time; created if no
  ``assigned`` came: a step that waits at once has none) and adds the wait's row, keyed
  by (step, attempt, index), the first of a key staying. A waiting of any other step,
  attempt or state changes nothing but its own delivery's row, ``SUSPENDED`` if it was
  ``RUNNING`` (that delivery stopped there: a late delivery of an attempt whose retry is
  scheduled waits for nothing); one of a delivery that already ended, nothing. Its ``woken``
  fills that row's wake once (which condition, the event); the step stays ``WAITING``
  until its task comes again (a task of the same attempt queues it again, as any task
  does). ``waiting_for`` is cleared whenever the step leaves ``WAITING``. A run still
  ``QUEUED`` is ``RUNNING`` from a wait (its step ran), started at the wait's time if
  nothing said earlier (a ``waiting`` carries no start time); so is the step.
- Flow control: a ``held`` of the step's attempt (not older than its latest, the step not
  over) makes it ``QUEUED``, ``waiting_for`` the hold's reason, until its task comes.
- Moved tasks (a task, or a ``held``, that names ``moved_from``): the step's attempt is
  queued again (as any task of it does: ``QUEUED``, same attempt), and its deliveries still
  ``RUNNING`` are ``LOST`` (their worker went; a later result of one still wins).
- A run is ``QUEUED`` when created, ``RUNNING`` from its first assignment, and takes its
  ``finished`` status; the first cancel request of a run still going is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import attrs
import orjson

from projector import ops
from projector.rows import AttemptRow, CronRow, Row, RunRow, ScheduleRow, StepRow, WaitRow

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
PENDING, QUEUED, RUNNING, SUCCEEDED = "PENDING", "QUEUED", "RUNNING", "SUCCEEDED"
WAITING, SUSPENDED = "WAITING", "SUSPENDED"
AttemptKey = tuple[str, int, int]  # (step, attempt, delivery) within a run
WaitKey = tuple[str, int, int]  # (step, attempt, wait index) within a run


class Fold:
    """The rows of one batch, as its operations leave them (see the module's rules)."""

    def __init__(
        self,
        runs: Iterable[RunRow],
        steps: Iterable[StepRow],
        attempts: Iterable[AttemptRow],
        crons: Iterable[CronRow] = (),
        schedules: Iterable[ScheduleRow] = (),
        waits: Iterable[WaitRow] = (),
    ) -> None:
        self.runs = {r.id: r for r in runs}
        # Durable steps' waits, by run; loaded only for the runs a waiting or woken names
        # (nothing else reads or changes them).
        self.waits: dict[str, dict[WaitKey, WaitRow]] = {}
        for w in waits:
            self.waits.setdefault(w.run_id, {})[(w.step, w.attempt, w.wait_index)] = w
        self.changed_waits: list[WaitRow] = []
        # Crons and scheduled runs, by (namespace, name or id); those that changed.
        self.crons = {(c.namespace, c.name): c for c in crons}
        self.schedules = {(s.namespace, s.id): s for s in schedules}
        self.changed_crons: list[CronRow] = []
        self.changed_schedules: list[ScheduleRow] = []
        self.steps: dict[str, dict[str, StepRow]] = {}
        for s in steps:
            self.steps.setdefault(s.run_id, {})[s.name] = s
        self.attempts: dict[str, dict[AttemptKey, AttemptRow]] = {}
        for a in attempts:
            self.attempts.setdefault(a.run_id, {})[(a.step, a.attempt, a.delivery)] = a
        # The rows that changed, each once, in the order they first did.
        self.changed_runs: list[RunRow] = []
        self.changed_steps: list[StepRow] = []
        self.changed_attempts: list[AttemptRow] = []
        # Rows only ever inserted, by key; the first one of a key stays.
        self.events: dict[int, ops.Event] = {}
        self.workflows: dict[tuple[str, str, str], ops.Workflow] = {}
        self.logs: dict[int, ops.Log] = {}
        self.rejections: dict[int, ops.Rejection] = {}

    def _changed(self, row: Row, seq: int) -> None:
        row.last_seq = seq
        if row.dirty:
            return
        row.dirty = True
        if isinstance(row, RunRow):
            self.changed_runs.append(row)
        elif isinstance(row, StepRow):
            self.changed_steps.append(row)
        elif isinstance(row, WaitRow):
            self.changed_waits.append(row)
        else:
            self.changed_attempts.append(row)

    def _step(self, run_id: str, name: str, seq: int) -> StepRow | None:
        """The step, if it exists and is older than ``seq``."""
        step = self.steps.get(run_id, {}).get(name)
        return step if step is not None and step.last_seq < seq else None

    def apply(self, op: ops.Op) -> None:
        match op:
            case ops.Event():
                self.events.setdefault(op.seq, op)
            case ops.Workflow():
                self.workflows.setdefault((op.namespace, op.name, op.version), op)
            case ops.Rejection():
                self.rejections.setdefault(op.seq, op)
            case ops.Log():
                if op.run_id in self.runs:
                    self.logs.setdefault(op.seq, op)
            case ops.Created():
                self._created(op)
            case ops.Rejected():
                self._rejected(op)
            case ops.CancelRequested():
                self._cancel_requested(op)
            case ops.Finished():
                self._finished(op)
            case ops.Queued():
                self._queued(op)
            case ops.RetryScheduled():
                self._retry_scheduled(op)
            case ops.StepFinished():
                self._step_finished(op)
            case ops.Assigned():
                self._assigned(op)
            case ops.Result():
                self._result(op)
            case ops.Waiting():
                self._waiting(op)
            case ops.Woken():
                self._woken(op)
            case ops.Held():
                self._held(op)
            case ops.CronChange():
                self._cron(op)
            case ops.ScheduleChange():
                self._schedule(op)

    def _touched(self, row: CronRow | ScheduleRow, seq: int) -> None:
        row.last_seq = seq
        if not row.dirty:
            row.dirty = True
            if isinstance(row, CronRow):
                self.changed_crons.append(row)
            else:
                self.changed_schedules.append(row)

    def _cron(self, op: ops.CronChange) -> None:
        """A newer ``created`` makes the row anew (a cron of that name replaced); the other
        records change the cron of their id, once, and a deleted or rejected cron stays so."""
        key = (op.namespace, op.name)
        row = self.crons.get(key)
        if row is not None and row.last_seq >= op.seq:
            return
        if op.change == "created":
            new = CronRow(op.namespace, op.name, op.cron_id or "", op.workflow or "",
                          op.expression or "", op.timezone, op.input, "ACTIVE", None, op.at,
                          None, None, None, None, op.seq)  # fmt: skip
            if row is None:
                self.crons[key] = row = new
            else:  # replaced in place: the row may already be among those that changed
                for field in attrs.fields(CronRow):
                    if field.name != "dirty":
                        setattr(row, field.name, getattr(new, field.name))
            self._touched(row, op.seq)
            return
        if row is None or row.status != "ACTIVE":
            return
        if op.change == "deleted":
            row.status, row.deleted_at, row.next_fire_at = "DELETED", op.at, None
        elif op.cron_id != row.cron_id:
            return
        elif op.change == "armed":
            row.next_fire_at = op.fire_at
        elif op.change == "fired":
            row.last_fire_at, row.last_run_id = op.fire_at, op.run_id
            if row.next_fire_at is not None and op.fire_at and row.next_fire_at <= op.fire_at:
                row.next_fire_at = None
        elif op.change == "rejected":
            row.status, row.reason, row.next_fire_at = "REJECTED", op.reason, None
        self._touched(row, op.seq)

    def _schedule(self, op: ops.ScheduleChange) -> None:
        """The first ``created`` of an id makes the row; then it ends once: FIRED, DELETED
        or REJECTED."""
        key = (op.namespace, op.id)
        row = self.schedules.get(key)
        if row is not None and row.last_seq >= op.seq:
            return
        if op.change == "created":
            if row is None:
                row = ScheduleRow(op.namespace, op.id, op.workflow or "", op.trigger_at,
                                  op.input, "PENDING", None, None, op.at, None, None,
                                  op.seq)  # fmt: skip
                self.schedules[key] = row
                self._touched(row, op.seq)
            return
        if row is None or row.status != "PENDING":
            return
        if op.change == "fired":
            row.status, row.run_id, row.fired_at = "FIRED", op.run_id, op.at
        elif op.change == "deleted":
            row.status, row.deleted_at = "DELETED", op.at
        elif op.change == "rejected":
            row.status, row.reason = "REJECTED", op.reason
        self._touched(row, op.seq)

    def _created(self, op: ops.Created) -> None:
        if op.run_id not in self.runs:
            run = RunRow(op.run_id, op.namespace, op.workflow, QUEUED, None, op.created_at,
                         None, None, op.seq, None, None, op.workflow_version, op.input,
                         op.event_key, op.event_id, op.replay_of,
                         op.replay_from_step, op.parent_run_id, op.parent_step,
                         op.child_key, op.additional_metadata, op.cron, op.schedule_id,
                         op.fire_at, op.concurrency_key, op.concurrency,
                         op.priority)  # fmt: skip
            self.runs[op.run_id] = run
            self._changed(run, op.seq)
        steps = self.steps.setdefault(op.run_id, {})
        for new in op.steps:
            if new.name not in steps:
                # A replay's kept step is SUCCEEDED from the start, with no attempt here.
                status = PENDING if new.kept is None else SUCCEEDED
                step = StepRow(op.run_id, new.name, new.parents, new.on_failure, status,
                               new.kept, None, None, None, None, None, op.seq, None,
                               on_success=new.on_success)  # fmt: skip
                steps[new.name] = step
                self._changed(step, op.seq)

    def _rejected(self, op: ops.Rejected) -> None:
        if op.run_id not in self.runs:
            run = RunRow(op.run_id, op.namespace, op.workflow, "FAILED", op.reason, op.at,
                         None, op.at, op.seq, None, None)  # fmt: skip
            self.runs[op.run_id] = run
            self._changed(run, op.seq)

    def _cancel_requested(self, op: ops.CancelRequested) -> None:
        # The first request of a run still going counts; the dispatcher ignores the others.
        run = self.runs.get(op.run_id)
        if run is None or run.last_seq >= op.seq or run.cancel_requested_at is not None:
            return
        if run.status not in TERMINAL:
            run.cancel_requested_at, run.cancel_reason = op.at, op.reason
            self._changed(run, op.seq)

    def _finished(self, op: ops.Finished) -> None:
        run = self.runs.get(op.run_id)
        if run is not None and run.last_seq < op.seq:
            run.status, run.error, run.finished_at = op.status, op.error, op.at
            self._changed(run, op.seq)
        if not op.terminal:
            return
        # Attempts nobody reported on; a result appended later still wins (newer seq).
        for attempt in self.attempts.get(op.run_id, {}).values():
            if attempt.status == RUNNING and attempt.last_seq < op.seq:
                attempt.status, attempt.error = "CANCELLED", ops.RUN_ENDED
                attempt.finished_at = op.at
                self._changed(attempt, op.seq)

    def _queued(self, op: ops.Queued) -> None:
        step = self._step(op.run_id, op.step, op.seq)
        if step is None or (step.attempt or 0) > op.attempt:
            return
        if step.status not in TERMINAL:
            step.status, step.waiting_for = QUEUED, None
        if step.queued_at is None:
            step.queued_at = op.at
        step.attempt, step.retry_due_at = op.attempt, None
        self._changed(step, op.seq)
        if op.moved_from is not None:
            self._lost(op.run_id, op.step, op.attempt, op.at, op.seq)

    def _lost(self, run_id: str, name: str, attempt: int, at: dt.datetime, seq: int) -> None:
        """The attempt's task moved off its worker: its deliveries still running are lost."""
        for (step, number, _delivery), row in self.attempts.get(run_id, {}).items():
            if step == name and number == attempt and row.status == RUNNING and row.last_seq < seq:
                row.status, row.error, row.finished_at = "LOST", ops.MOVED, at
                self._changed(row, seq)

    def _held(self, op: ops.Held) -> None:
        """A step kept back by flow control: ``QUEUED`` (not yet offered), its
        ``waiting_for`` the hold's reason until its task comes (or a later hold's)."""
        step = self._step(op.run_id, op.step, op.seq)
        if step is None or step.status in TERMINAL or (step.attempt or 0) > op.attempt:
            return
        step.status, step.waiting_for = QUEUED, op.reason
        if step.queued_at is None:
            step.queued_at = op.at
        step.attempt, step.retry_due_at = op.attempt, None
        self._changed(step, op.seq)
        if op.moved_from is not None:
            self._lost(op.run_id, op.step, op.attempt, op.at, op.seq)

    def _retry_scheduled(self, op: ops.RetryScheduled) -> None:
        step = self._step(op.run_id, op.step, op.seq)
        if step is None or step.status in TERMINAL or (step.attempt or 0) >= op.next_attempt:
            return
        step.status, step.attempt, step.error = QUEUED, op.next_attempt, op.error
        step.retry_due_at, step.waiting_for = op.due_at, None
        self._changed(step, op.seq)

    def _step_finished(self, op: ops.StepFinished) -> None:
        step = self._step(op.run_id, op.step, op.seq)
        if step is None:
            return
        step.status, step.output, step.error, step.finished_at = (
            op.status, op.output, op.error, op.at
        )  # fmt: skip
        # A step the run ended before it was ever queued is finished with attempt 0: it
        # keeps no attempt number.
        if op.attempt != 0 and (step.attempt is None or step.attempt < op.attempt):
            step.attempt = op.attempt
        step.retry_due_at, step.waiting_for = None, None
        self._changed(step, op.seq)

    def _assigned(self, op: ops.Assigned) -> None:
        attempts = self.attempts.setdefault(op.run_id, {})
        step_row = self._step(op.run_id, op.step, op.seq)
        if op.run_id in self.runs:
            mine = attempts.get((op.step, op.attempt, op.delivery))
            # A copy of an assignment already folded (a worker that sent it again after the
            # duplicate window) once the step moved on (queued again by a wake, say): the
            # delivery is the step's past, and takes the step no more.
            stale = mine is not None and step_row is not None and mine.last_seq < step_row.last_seq
            if mine is None:
                mine = AttemptRow(op.run_id, op.step, op.attempt, op.delivery,
                                  op.worker_id, op.worker_name, RUNNING, op.at,
                                  None, None, None, op.seq)  # fmt: skip
                attempts[(op.step, op.attempt, op.delivery)] = mine
                self._changed(mine, op.seq)
            elif mine.last_seq < op.seq:
                mine.worker_id, mine.worker_name = op.worker_id, op.worker_name
                if mine.started_at is None:
                    mine.started_at = op.at
                self._changed(mine, op.seq)
            if stale:
                return
        self._taken(op.run_id, op.step, op.attempt, op.delivery, op.at, op.seq, step_row)

    def _taken(
        self,
        run_id: str,
        name: str,
        attempt: int,
        delivery: int,
        at: dt.datetime,
        seq: int,
        step_row: StepRow | None,
    ) -> None:
        """A worker took ``delivery`` at ``at`` (its ``assigned``, or the result carrying
        it), beyond that delivery's own row: an earlier delivery still running is lost, the
        step and the run are running. ``step_row``: the step as ``_step`` found it before
        the operation changed anything."""
        reported = False
        for (step, number, other_delivery), other in self.attempts.get(run_id, {}).items():
            if step != name or number != attempt:
                continue
            # JetStream redelivered the task: whoever held an earlier delivery never answered.
            if other_delivery < delivery and other.status == RUNNING and other.last_seq < seq:
                other.status, other.error, other.finished_at = "LOST", ops.LOST, at
                self._changed(other, seq)
            # A stale copy of an assignment whose delivery (or a later one) already reported,
            # say handed back, must not make the step RUNNING again.
            reported = reported or (other_delivery >= delivery and other.finished_at is not None)
        if step_row is not None and (step_row.attempt or 0) <= attempt and not reported:
            if step_row.status not in TERMINAL:
                step_row.status, step_row.waiting_for = RUNNING, None
            if step_row.started_at is None:
                step_row.started_at = at
            step_row.attempt, step_row.retry_due_at = attempt, None
            self._changed(step_row, seq)
        run = self.runs.get(run_id)
        if run is not None and run.status == QUEUED and run.last_seq < seq:
            run.status = RUNNING
            if run.started_at is None:
                run.started_at = at
            self._changed(run, seq)

    def _result(self, op: ops.Result) -> None:
        attempts = self.attempts.setdefault(op.run_id, {})
        step = self._step(op.run_id, op.step, op.seq)
        if op.started_at is not None:  # it carries its assignment: that comes first
            self._taken(op.run_id, op.step, op.attempt, op.delivery, op.started_at, op.seq, step)
        if op.run_id in self.runs:
            mine = attempts.get((op.step, op.attempt, op.delivery))
            if mine is None:
                mine = AttemptRow(op.run_id, op.step, op.attempt, op.delivery,
                                  op.worker_id, op.worker_name, op.status, op.started_at,
                                  op.at, op.error, op.output, op.seq)  # fmt: skip
                attempts[(op.step, op.attempt, op.delivery)] = mine
                self._changed(mine, op.seq)
            elif mine.last_seq < op.seq:
                mine.status, mine.finished_at = op.status, op.at
                mine.error, mine.output = op.error, op.output
                # An assigned already folded wins; what it left unset, the result fills.
                if mine.worker_id is None:
                    mine.worker_id = op.worker_id
                if mine.worker_name is None:
                    mine.worker_name = op.worker_name
                if mine.started_at is None:
                    mine.started_at = op.started_at
                self._changed(mine, op.seq)
        if not op.handed_back:
            return
        # Another delivery of this attempt follows: the step waits for it, unless it has
        # already been assigned.
        if step is None or step.status != RUNNING or step.attempt != op.attempt:
            return
        if not any(k[0] == op.step and k[1] == op.attempt and k[2] > op.delivery for k in attempts):
            step.status = QUEUED
            self._changed(step, op.seq)

    def _waiting(self, op: ops.Waiting) -> None:
        """A delivery of the step's current attempt waits (see the module's rules)."""
        step = self._step(op.run_id, op.step, op.seq)
        run = self.runs.get(op.run_id)
        attempts = self.attempts.setdefault(op.run_id, {})
        mine = attempts.get((op.step, op.attempt, op.delivery))
        if (
            run is None
            or step is None
            or step.status not in (QUEUED, RUNNING)
            or step.attempt != op.attempt
        ):
            # The step moved on (a late delivery of an attempt whose retry is scheduled, say):
            # the wait wakes nothing, but that delivery stopped running there and then.
            if mine is not None and mine.status == RUNNING and mine.last_seq < op.seq:
                mine.status, mine.finished_at = SUSPENDED, op.at
                self._changed(mine, op.seq)
            return
        if mine is not None and (mine.status != RUNNING or mine.last_seq >= op.seq):
            return  # that delivery already ended (reported, lost, cancelled, waited)
        if mine is None:
            mine = AttemptRow(op.run_id, op.step, op.attempt, op.delivery, op.worker_id,
                              op.worker_name or None, SUSPENDED, None, op.at, None, None,
                              op.seq)  # fmt: skip
            attempts[(op.step, op.attempt, op.delivery)] = mine
        else:
            mine.status, mine.finished_at = SUSPENDED, op.at
        self._changed(mine, op.seq)
        waits = self.waits.setdefault(op.run_id, {})
        if (op.step, op.attempt, op.index) not in waits:
            wait = WaitRow(op.run_id, op.step, op.attempt, op.index, op.delivery, op.conditions,
                           op.waiting_for, op.worker_id, op.worker_name, op.at, None, None,
                           None, None, None, None, op.seq)  # fmt: skip
            waits[(op.step, op.attempt, op.index)] = wait
            self._changed(wait, op.seq)
        step.status, step.waiting_for = WAITING, op.waiting_for
        if step.started_at is None:
            step.started_at = op.at
        self._changed(step, op.seq)
        if run.status == QUEUED and run.last_seq < op.seq:
            run.status = RUNNING
            if run.started_at is None:
                run.started_at = op.at
            self._changed(run, op.seq)

    def _woken(self, op: ops.Woken) -> None:
        """A wait's wake, once; one of a wait never recorded, or naming a condition it does
        not have, changes nothing."""
        wait = self.waits.get(op.run_id, {}).get((op.step, op.attempt, op.index))
        if wait is None or wait.last_seq >= op.seq or wait.woken_at is not None:
            return
        if op.condition >= len(orjson.loads(wait.conditions)):
            return
        wait.woken_at, wait.condition, wait.kind = op.at, op.condition, op.kind
        wait.event_key, wait.event_id, wait.payload = op.event_key, op.event_id, op.payload
        self._changed(wait, op.seq)
