"""What the dispatcher appends in answer to an input. Pure: returns messages, never does IO.

Every output carries a deterministic dedup id, so deciding the same input twice (after a
crash between append and ack) appends nothing new; and deciding consults the folded state,
so an input whose effects are already in the log decides nothing at all.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import uuid
from typing import Any

import attrs

from dispatcher.children import child_trigger, descendants, is_spawn, spawn_refusal
from dispatcher.folding import fold_finished, new_run, next_wait
from dispatcher.policy import after, backoff_s, iso
from dispatcher.state import RunState, State, StepState, deadlines_of, timed_out_at
from dispatcher.waits import wait_problem
from dispatcher.wakes import woken_by_event, woken_by_time
from schemas.codec import encode
from schemas.concurrency import concurrency_key
from schemas.durable import StepWaiting, StepWoken
from schemas.messages import (
    RunCancelRequested,
    RunCreated,
    RunFinished,
    RunRejected,
    RunRequested,
    RunStatus,
    StepFinished,
    StepResult,
    StepRetryScheduled,
    Task,
    Trigger,
    WorkflowDef,
)
from schemas.priority import priority_problem
from schemas.subjects import Scope

log = logging.getLogger(__name__)

RUN_ID_NAMESPACE = uuid.UUID("6f0c6f2e-1f4b-4a53-9d0e-6b3c5b1f7a21")


@attrs.frozen
class Output:
    """One message a decision appends, with its dedup id; ``body`` is encoded once."""

    subject: str
    message: Any
    msg_id: str
    body: bytes = attrs.field(init=False, repr=False, eq=False)
    # The trace context it carries on (dispatcher.traces; empty unless tracing is on).
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "body", encode(self.message))


@attrs.frozen
class Event:
    """A user event as the dispatcher sees it: its key, stream sequence and JSON body, and
    the additional metadata its headers carry (:mod:`schemas.metadata`)."""

    key: str
    seq: int
    payload: Any
    metadata: dict[str, str] = attrs.Factory(dict)
    # Its ``Natchet-Priority`` header's (:mod:`schemas.priority`), and why that header was
    # refused (the runs it would start are rejected with that reason).
    priority: int | None = None
    priority_error: str | None = None


def event_run_id(scope: Scope, event_seq: int, workflow: str) -> str:
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{scope.prefix}/{event_seq}/{workflow}"))


def decide(state: State, scope: Scope, message: object, now: dt.datetime) -> list[Output]:
    match message:
        case Event():
            return _on_event(state, scope, message, now)
        case RunRequested():
            return _on_requested(state, scope, message, now)
        case StepResult():
            return _on_result(state, scope, message, now)
        case StepWaiting():
            return _on_waiting(state, scope, message, now)
        case RunCancelRequested():
            run = state.run(scope, message.run_id)
            if run is None:
                return []
            reason = f"cancelled: {message.reason}" if message.reason else "cancelled"
            return cancel_run(state, run, reason, now)
        case _:
            return []  # assignments, logs, and anything else only fold


def cancel_run(state: State, run: RunState, reason: str, now: dt.datetime) -> list[Output]:
    """End the run CANCELLED for ``reason``, its children in flight before it."""
    out: list[Output] = []
    for child in descendants(state, run):  # a parent's children end with it
        why = f"its parent run {child.parent} was cancelled"
        if state.owns(child):
            out += _finish(child, RunStatus.CANCELLED, f"cancelled: {why}", now)
        else:  # another partition's run: its owner ends it (``dispatcher.partition``)
            ask = RunCancelRequested(run_id=child.run_id, reason=why, requested_at=iso(now))
            subject = child.scope.run(child.run_id, "cancel_requested")
            out.append(Output(subject, ask, f"{child.run_id}:cancel:{run.run_id}"))
    return out + _finish(run, RunStatus.CANCELLED, reason, now)


def offer_ready(run: RunState, now: dt.datetime) -> list[Output]:
    """Offer every step of the run ready to run (its first tasks: a run admitted)."""
    return [o for s in run.dag() if run.ready(s) for o in queue_task(run, s, 1, now)]


def due(state: State, now: dt.datetime) -> list[list[Output]]:
    """Retries whose backoff is over, and queued steps nobody picked up in time: at most one
    decision per run per call (each is appended and folded before the next is made), the
    most overdue first (ties by run id).

    Only runs with a deadline at or before ``now`` in ``state.deadlines`` are looked at,
    each as a whole and as a scan of every run would (``_due_in``), so an entry gone stale
    decides nothing. What is still due in them is indexed again (a run decides one thing a
    call, and a decision not folded yet is made again, as the scan would): the index is all
    this changes in ``state``."""
    heap = state.deadlines
    popped: dict[str, None] = {}  # run ids, in the order popped
    while heap and heap[0][0] <= now:
        popped[heapq.heappop(heap)[1]] = None
    found: list[tuple[dt.datetime, str, list[Output]]] = []
    limits: dict[float, dt.datetime] = {}  # now - timeout, one subtraction per timeout
    for run_id in popped:
        run = state.runs.get(run_id)
        if run is None or not state.owns(run):
            continue  # the run is over (its entries were stale), or not this partition's
        limit = limits.get(run.schedule_timeout_s)
        if limit is None:
            limit = limits[run.schedule_timeout_s] = after(now, -run.schedule_timeout_s)
        decision = _due_in(run, now, limit)
        if decision is not None:
            found.append(decision)
        for name, step in run.steps.items():
            for when in deadlines_of(run, step):
                if when <= now:
                    heapq.heappush(heap, (when, run_id, name))
    found.sort(key=lambda f: (f[0], f[1]))
    return [decision for _when, _run_id, decision in found]


def _due_in(
    run: RunState, now: dt.datetime, limit: dt.datetime
) -> tuple[dt.datetime, str, list[Output]] | None:
    """The run's first step (in order) whose retry is due, whose durable wait's sleep is
    over, or whose wait in the queue timed out (waiting since ``<= limit``, that is ``now -
    schedule_timeout_s``): when that was due, and the decision."""
    for step in run.steps.values():
        if (
            step.retry_due is not None
            and step.retry_due <= now
            and not step.terminal
            and not run.failed_error  # a failing run releases nothing more
        ):
            return step.retry_due, run.run_id, queue_task(run, step, step.next_attempt, now)
        wake = woken_by_time(run, step, now)
        if wake is not None:
            return wake[0], run.run_id, _wake(run, step, wake[1], now)
        if step.status is not RunStatus.QUEUED or step.assigned:
            continue
        since = step.waiting_since
        if since is not None and since <= limit:
            reason = (
                f"not picked up by any worker within {run.schedule_timeout_s:g}s "
                "(schedule_timeout): is a worker for this workflow running?"
            )
            if step.held:  # kept back by flow control all that time (dispatcher.holds)
                reason = (
                    f"held back for {run.schedule_timeout_s:g}s (schedule_timeout) and never "
                    f"offered to a worker: {step.held_reason}"
                )
            when = timed_out_at(since, run.schedule_timeout_s)
            return when, run.run_id, _step_failed(run, step, step.attempt, 1, reason, now)
    return None


def complete(state: State, now: dt.datetime) -> list[list[Output]]:
    """What the folded log implies but does not hold: the rest of decisions a crash cut
    short. A decision is appended in an order whose every prefix is completable: a run's
    ``created`` before its first tasks, a step's verdict before the tasks it releases, the
    run's end last. So after a rebuild: ready steps without a task are offered, a run whose
    steps all succeeded is finished, a failing run goes on to its on-failure step or its
    end. Each output has the dedup id of the one it replaces: nothing lands twice."""
    decisions: list[list[Output]] = []
    for run in list(state.runs.values()):
        if not state.owns(run):
            continue  # another partition completes it (``dispatcher.partition``)
        if run.failed_error:
            failure = run.failure_step()
            if failure is not None and failure.status is None:
                decisions.append(queue_task(run, failure, 1, now))
            elif failure is None or failure.terminal:
                decisions.append(_finish(run, RunStatus.FAILED, run.failed_error, now))
        elif all(s.status is RunStatus.SUCCEEDED for s in run.dag()):
            success = run.success_step()
            if success is not None and success.status is None:
                decisions.append(queue_task(run, success, 1, now))
            elif success is None or success.status is RunStatus.SUCCEEDED:
                decisions.append(_finish(run, RunStatus.SUCCEEDED, None, now))
        elif run.admitted:  # a run waiting for its concurrency key: the admissions' turn
            out = offer_ready(run, now)
            if out:
                decisions.append(out)
        resumed = [
            o
            for s in run.steps.values()
            if s.wakes
            and s.resumed < len(s.wakes)
            and s.waiting is None
            and not s.terminal
            and not s.held
            for o in queue_task(run, s, s.attempt, now, s.wakes)
        ]
        if resumed and not run.failed_error:
            decisions.append(resumed)
        decisions += held_again(state, run, now)
    return decisions


def held_again(state: State, run: RunState, now: dt.datetime) -> list[list[Output]]:
    """The tasks of the run's held steps (``held`` in the log) that are not held in
    memory (a restart): made again as they were decided (same time, same dedup id), each
    its own decision, to go through the gates again (``dispatcher.holds``)."""
    return [
        queue_task(
            run,
            s,
            s.attempt,
            s.queued_at or now,
            s.wakes[: s.held_wakes],
            moves=s.moves,
            moved_from=s.moved_from,
        )
        for s in run.steps.values()
        if s.held
        and not s.terminal
        and (s.on_failure or not run.failed_error)  # a failing run releases nothing more
        and (run.run_id, s.spec.name) not in state.holds.tasks
    ]


def _on_event(state: State, scope: Scope, event: Event, now: dt.datetime) -> list[Output]:
    """A run of every workflow of the scope whose ``on_events`` names the key (or a pattern
    of it) and whose filter, if it has one, is true of the event (``dispatcher.matching``);
    by workflow name."""
    out: list[Output] = []
    started, skipped = state.routes.matching(scope, event.key, event.payload, event.metadata)
    for miss in skipped:
        log.warning(
            "event %s at seq %d of %s does not start %s: its event filter failed: %s",
            event.key, event.seq, scope.prefix, miss.workflow, miss.reason,
        )  # fmt: skip
    part = state.partition
    for wf in started:
        run_id = event_run_id(scope, event.seq, wf.name)
        if state.known(run_id):
            continue
        if event.priority_error is not None:
            if part.owns(run_id, coordinated=False):  # a run never created: by its id
                out += reject(scope, run_id, wf.name, event.priority_error, now)
            continue
        if not state.owns_new(run_id, wf, event.priority):
            continue  # another partition's run (``dispatcher.partition``)
        trigger = Trigger.of_event(event.key, str(event.seq))
        out += create(
            scope, wf, run_id, event.payload, trigger, now, event.metadata, event.priority
        )
    for run, step, woken in woken_by_event(
        state, scope, (event.key, event.seq, event.payload, event.metadata), now
    ):
        if state.owns(run):
            out += _wake(run, step, woken, now)
    return out


def _on_requested(state: State, scope: Scope, req: RunRequested, now: dt.datetime) -> list[Output]:
    if state.known(req.run_id) or req.replay_of is not None:
        return []  # a replay is decided with the run it names (``dispatcher.replay``)
    trigger = None
    if is_spawn(req):  # a child run: its parent must be in flight here (dispatcher.children)
        refusal = spawn_refusal(state, scope, req)
        if refusal is not None:
            return reject(scope, req.run_id, req.workflow, refusal, now)
        trigger = child_trigger(req)
    wf = state.workflows.get((scope, req.workflow))
    if wf is None:
        reason = f"no worker has registered workflow {req.workflow!r} in {scope.prefix}"
        return reject(scope, req.run_id, req.workflow, reason, now)
    return create(
        scope, wf, req.run_id, req.input, trigger, now, req.additional_metadata, req.priority
    )


def reject(scope: Scope, run_id: str, workflow: str, reason: str, now: dt.datetime) -> list[Output]:
    """A requested run that will not be created, and why: its recorded end."""
    rejected = RunRejected(run_id=run_id, workflow=workflow, reason=reason, at=iso(now))
    return [Output(scope.run(run_id, "rejected"), rejected, f"{run_id}:rejected")]


def create(
    scope: Scope,
    wf: WorkflowDef,
    run_id: str,
    payload: Any,
    trigger: Trigger | None,
    now: dt.datetime,
    metadata: dict[str, str] | None = None,
    priority: int | None = None,
    kept: dict[str, Any] | None = None,
) -> list[Output]:
    """Create the run and offer its ready steps (``kept``: a replay's steps carried over,
    already SUCCEEDED; ``metadata``: the additional metadata it carries). A run of a
    workflow with concurrency gets its key and waits for admission (``dispatcher.admission``:
    its ready steps are offered once its key has room); one whose key cannot be evaluated
    is rejected, with why. Its priority is ``priority`` (its trigger's), else the
    workflow's default (one outside 1..3 rejects the run)."""
    problem = priority_problem(priority)
    if problem is not None:
        return reject(scope, run_id, wf.name, problem, now)
    key = None
    if wf.concurrency is not None:
        key, why = concurrency_key(wf.concurrency, payload, metadata or {})
        if key is None:
            return reject(scope, run_id, wf.name, f"no concurrency key: {why}", now)
    for spec in wf.steps:
        if spec.concurrency is not None:
            _key, why = concurrency_key(spec.concurrency, payload, metadata or {})
            if why is not None:
                reason = f"no concurrency key for step {spec.name!r}: {why}"
                return reject(scope, run_id, wf.name, reason, now)
    created = RunCreated(
        run_id=run_id,
        workflow=wf.name,
        workflow_version=wf.version,
        input=payload,
        steps=wf.steps,
        trigger=trigger,
        created_at=iso(now),
        on_failure=wf.on_failure,
        schedule_timeout_s=wf.schedule_timeout_s,
        kept=kept or {},
        on_success=wf.on_success,
        additional_metadata=metadata or {},
        concurrency=wf.concurrency,
        concurrency_key=key,
        priority=priority if priority is not None else wf.default_priority,
    )
    run = new_run(scope, created)
    out = [Output(scope.run(run_id, "created"), created, f"{run_id}:created")]
    if not run.admitted:
        return out  # its turn comes from the admissions
    return out + offer_ready(run, now)


def queue_task(
    run: RunState,
    step: StepState,
    attempt: int,
    now: dt.datetime,
    wakes: tuple[StepWoken, ...] = (),
    *,
    moves: int = 0,
    moved_from: str | None = None,
) -> list[Output]:
    """Offer the step's attempt: its task is also the record that it was queued (one
    message, so a decision cut short never leaves a step queued without a task). A durable
    step's attempt is offered again with each wake (``wakes``: all of the attempt's), and
    a placed one whose worker went, moved (``moves``: its count, ``dispatcher.moved``)."""
    name = step.spec.name
    parents = [s.spec.name for s in run.dag()] if step.on_success else step.spec.parents
    task = Task(
        run_id=run.run_id,
        workflow=run.workflow,
        step=name,
        attempt=attempt,
        input=run.input,
        parent_outputs={p: run.steps[p].output for p in parents},
        timeout_s=step.spec.timeout_s,
        queued_at=iso(now),
        workflow_version=run.workflow_version,
        step_errors=run.step_errors() if step.on_failure else {},
        schedule_deadline=iso(after(now, run.schedule_timeout_s)),
        wakes=wakes,
        delivery_offset=step.delivery if wakes or moves else 0,
        priority=run.priority,
        moves=moves,
        moved_from=moved_from,
    )
    msg_id = f"{run.run_id}:{name}:{attempt}:task" + (f":{len(wakes)}" if wakes else "")
    if moves:
        msg_id += f":moved:{moves}"
    return [Output(run.scope.task(run.workflow, name), task, msg_id)]


def _wake(run: RunState, step: StepState, woken: StepWoken, now: dt.datetime) -> list[Output]:
    """End the step's durable wait (``woken``) and offer its attempt again, with every
    wake so far: the step runs again from its start, on any worker."""
    name = step.spec.name
    msg_id = f"{run.run_id}:{name}:{woken.attempt}:woken:{woken.index}"
    said = Output(run.scope.run(run.run_id, "woken"), woken, msg_id)
    return [said, *queue_task(run, step, woken.attempt, now, (*step.wakes, woken))]


def _on_waiting(state: State, scope: Scope, waiting: StepWaiting, now: dt.datetime) -> list[Output]:
    """A durable step's next wait: nothing to do until it ends (``due``, ``_on_event``),
    unless it can never end (no condition, an expression that does not compile): then the
    step fails, for good."""
    run = state.run(scope, waiting.run_id)
    step = None if run is None else run.steps.get(waiting.step)
    if run is None or step is None or not next_wait(step, waiting):
        return []  # another run's, a stale delivery's, or one already folded
    problem = wait_problem(waiting)
    if problem is None:
        return []
    error = f"DurableWaitError: {problem}"
    return _step_failed(run, step, waiting.attempt, waiting.delivery, error, now)


def _on_result(state: State, scope: Scope, result: StepResult, now: dt.datetime) -> list[Output]:
    run = state.run(scope, result.run_id)
    step = None if run is None else run.steps.get(result.step)
    if run is None or step is None or step.status is None or step.terminal:
        return []  # a late duplicate for a step or run that is over, or a stray message
    if result.attempt != step.attempt or step.waiting_retry or result.handed_back:
        return []  # stale, already being retried, or handed back (another delivery follows)
    if result.delivery <= step.lost or (step.held and step.moves):
        return []  # of a delivery lost when its task moved off its worker (dispatcher.moved)
    if result.ok:
        return _step_succeeded(run, step, result, now)
    error = result.error or "failed"
    retries_left = result.attempt <= step.spec.retries
    if retries_left and not result.non_retryable and not step.on_failure and not run.failed_error:
        return _retry(run, step, result.attempt, error, now)
    return _step_failed(run, step, result.attempt, result.delivery, error, now)


def _retry(
    run: RunState, step: StepState, attempt: int, error: str, now: dt.datetime
) -> list[Output]:
    delay = backoff_s(step.spec, attempt)
    if delay <= 0:
        return queue_task(run, step, attempt + 1, now)
    scheduled = StepRetryScheduled(
        run_id=run.run_id,
        step=step.spec.name,
        attempt=attempt,
        next_attempt=attempt + 1,
        due_at=iso(after(now, delay)),
        error=error,
        at=iso(now),
    )
    msg_id = f"{run.run_id}:{step.spec.name}:{attempt}:retry"
    return [Output(run.scope.run(run.run_id, "retry_scheduled"), scheduled, msg_id)]


def _verdict(
    run: RunState,
    step: StepState,
    status: RunStatus,
    attempt: int,
    delivery: int,
    output: Any,
    error: str | None,
    now: dt.datetime,
) -> StepFinished:
    return StepFinished(
        run_id=run.run_id,
        step=step.spec.name,
        attempt=attempt,
        delivery=delivery,
        status=status,
        output=output,
        error=error,
        at=iso(now),
    )


def _said(run: RunState, verdict: StepFinished) -> Output:
    """A verdict on its own (the run goes on): a ``step_finished`` message."""
    msg_id = f"{run.run_id}:{verdict.step}:finished"
    return Output(run.scope.run(run.run_id, "step_finished"), verdict, msg_id)


def _settled(run: RunState, verdict: StepFinished) -> RunState:
    """The run as it will be once ``verdict`` is folded: the fold itself, on a copy (of the
    run and of the one step the verdict changes: the fold touches nothing else)."""
    steps = dict(run.steps)
    if verdict.step in steps:
        steps[verdict.step] = attrs.evolve(steps[verdict.step])
    copy = attrs.evolve(run, steps=steps)
    fold_finished(copy, verdict)
    return copy


def _step_succeeded(
    run: RunState, step: StepState, result: StepResult, now: dt.datetime
) -> list[Output]:
    verdict = _verdict(
        run, step, RunStatus.SUCCEEDED, result.attempt, result.delivery, result.output, None, now
    )
    after_run = _settled(run, verdict)
    if step.on_failure:
        return _finish(after_run, RunStatus.FAILED, run.failed_error, now, verdict)
    if run.failed_error:
        return [_said(run, verdict)]  # the run is failing: release nothing more
    if step.on_success:
        return _finish(after_run, RunStatus.SUCCEEDED, None, now, verdict)
    if all(s.status is RunStatus.SUCCEEDED for s in after_run.dag()):
        success = after_run.success_step()
        if success is not None and success.status is None:
            return [_said(run, verdict), *queue_task(after_run, success, 1, now)]
        return _finish(after_run, RunStatus.SUCCEEDED, None, now, verdict)
    out = [_said(run, verdict)]
    for child in after_run.children_of(step.spec.name):
        if after_run.ready(child):
            out += queue_task(after_run, child, 1, now)
    return out


def _step_failed(
    run: RunState, step: StepState, attempt: int, delivery: int, error: str, now: dt.datetime
) -> list[Output]:
    verdict = _verdict(run, step, RunStatus.FAILED, attempt, delivery, None, error, now)
    after_run = _settled(run, verdict)
    if step.on_failure:
        return _finish(after_run, RunStatus.FAILED, run.failed_error, now, verdict)
    if run.failed_error:
        return [_said(run, verdict)]  # already failing; the on-failure step is under way
    failure = after_run.failure_step()
    if failure is not None and failure.status is None:
        return [_said(run, verdict), *queue_task(after_run, failure, 1, now)]
    return _finish(after_run, RunStatus.FAILED, after_run.failed_error, now, verdict)


def fail_step(
    run: RunState, step: StepState, attempt: int, error: str, now: dt.datetime
) -> list[Output]:
    """The step's attempt fails for good (it can never be offered: flow control's
    ``Fail``), and what follows from that, as for any failed step."""
    return _step_failed(run, step, attempt, 0, error, now)


def finish_run(run: RunState, reason: str, now: dt.datetime) -> list[Output]:
    """End a run in flight FAILED for ``reason`` (every step not over is cancelled)."""
    return _finish(run, RunStatus.FAILED, reason, now)


def _finish(
    run: RunState,
    status: RunStatus,
    error: str | None,
    now: dt.datetime,
    verdict: StepFinished | None = None,
) -> list[Output]:
    """End the run, in one message: ``verdict`` (the step whose end ends it, already
    folded into ``run``), every step not yet over cancelled, then the run's own verdict."""
    steps = [] if verdict is None else [verdict]
    for step in run.steps.values():
        if not step.terminal:
            if step.on_failure and status is RunStatus.SUCCEEDED:
                why = "not needed: the run succeeded"
            elif step.on_success and status is RunStatus.FAILED and step.status is None:
                why = "not needed: the run failed"
            else:
                why = f"the run ended {status}"
            steps.append(_verdict(run, step, RunStatus.CANCELLED, step.attempt, 0, None, why, now))
    finished = RunFinished(
        run_id=run.run_id, status=status, error=error, at=iso(now), steps=tuple(steps)
    )
    return [Output(run.scope.run(run.run_id, "finished"), finished, f"{run.run_id}:finished")]
