"""Folding the log into the dispatcher's state (:mod:`dispatcher.state`): how each logged
message changes the runs, their steps, and the indexes kept beside them. Pure: no IO, no
clocks. Idempotent: folding a message twice changes nothing more."""

from __future__ import annotations

from collections.abc import Callable

from dispatcher.crons import TRIGGER_MESSAGES, fold_trigger
from dispatcher.flowindex import track
from dispatcher.policy import parse_time
from dispatcher.state import RunState, State, StepState, watch
from dispatcher.waits import wait_problem
from schemas.concurrency import concurrency_key
from schemas.durable import StepWaiting, StepWoken, WaitKind
from schemas.holds import StepHeld
from schemas.messages import (
    RunCreated,
    RunFinished,
    RunRejected,
    RunStatus,
    StepAssigned,
    StepFinished,
    StepQueued,
    StepResult,
    StepRetryScheduled,
    Task,
    TriggerKind,
    WorkflowDef,
)
from schemas.ratelimits import RateLimitSet, set_problem
from schemas.subjects import Scope


def new_run(scope: Scope, created: RunCreated) -> RunState:
    """The run ``created`` starts. A replay's kept steps start SUCCEEDED, with the outputs
    of the run it replays."""
    steps = {s.name: StepState(spec=s) for s in created.steps}
    for name, output in created.kept.items():
        step = steps.get(name)
        if step is not None:
            step.status, step.output = RunStatus.SUCCEEDED, output
    if created.on_failure is not None:
        steps[created.on_failure.name] = StepState(spec=created.on_failure, on_failure=True)
    if created.on_success is not None and created.on_success.name not in steps:
        steps[created.on_success.name] = StepState(spec=created.on_success, on_success=True)
    by = created.trigger
    return RunState(
        scope=scope,
        run_id=created.run_id,
        workflow=created.workflow,
        workflow_version=created.workflow_version,
        input=created.input,
        steps=steps,
        schedule_timeout_s=created.schedule_timeout_s,
        parent=by.run_id if by is not None and by.kind is TriggerKind.CHILD else None,
        concurrency=created.concurrency,
        key=created.concurrency_key if created.concurrency is not None else None,
        admitted=created.concurrency is None or created.concurrency_key is None,
        metadata=dict(created.additional_metadata),
        priority=created.priority,
        step_keys=step_keys(created),
    )


def step_keys(created: RunCreated) -> dict[str, str]:
    """The concurrency key of each step of the run that has its own concurrency: its
    expression on the run's input and metadata (a step whose key cannot be evaluated has
    none here; ``decide.create`` rejects such a run before it is created)."""
    keys: dict[str, str] = {}
    for spec in created.steps:
        if spec.concurrency is not None:
            key, _why = concurrency_key(
                spec.concurrency, created.input, created.additional_metadata
            )
            if key is not None:
                keys[spec.name] = key
    return keys


def fold(state: State, scope: Scope, message: object, seq: int = 0) -> None:
    """Apply one logged message (at stream sequence ``seq``; 0: not known). Idempotent:
    folding a message twice changes nothing more."""
    match message:
        case WorkflowDef():
            state.register(scope, message)
        case RunCreated():
            if not state.known(message.run_id):
                new = state.runs.setdefault(message.run_id, new_run(scope, message))
                _link(state, new)
                if new.group is not None:
                    state.groups.add(new.group, new.run_id, new.admitted)
        case RunRejected():
            state.done.add(message.run_id)
        case StepQueued() | Task():  # a task is its step queued (older logs have both)
            _fold_queued(state, scope, message)
        case StepAssigned() | StepResult():
            # A result carries its delivery's assignment: the worker of a fast step appends
            # no ``assigned``, and its result still means a worker took that delivery. No
            # deadline to index: taking the step ends its wait in the queue, or (a delivery
            # already handed back) leaves it waiting since the hand-back.
            step = _step(state, scope, message.run_id, message.step)
            # A step moved off its worker and kept back has no task out: what comes is of a
            # delivery lost with the move (``dispatcher.moved``).
            if (
                step is not None
                and message.attempt == step.attempt
                and not step.terminal
                and not (step.held and step.moves)
            ):
                step.delivery = max(step.delivery, message.delivery)
                # Handed back: the task is back in the queue, to be picked up again in time.
                if (
                    isinstance(message, StepResult)
                    and message.handed_back
                    and message.delivery >= step.handed_back
                ):
                    step.handed_back = message.delivery
                    step.handed_back_at = parse_time(message.finished_at)
                step.settle_deliveries()
                if isinstance(message, StepResult) and message.handed_back:
                    watch(state, message.run_id, step)  # waiting again, since the hand-back
        case StepRetryScheduled():
            step = _step(state, scope, message.run_id, message.step)
            if step is not None and message.next_attempt > step.attempt and not step.terminal:
                step.retry_due = parse_time(message.due_at)
                step.next_attempt = message.next_attempt
                step.error = message.error
                reset_waits(step)  # the attempt failed: its wait ends with it
                watch(state, message.run_id, step)
        case StepWaiting() | StepWoken():
            _fold_wait(state, scope, message, seq)
        case StepHeld():
            _fold_held(state, scope, message)
        case RateLimitSet():
            if (
                set_problem(message) is None
                and state.rate_limits.get((scope, message.key)) != message
            ):
                state.rate_limits[(scope, message.key)] = message
                state.holds.dirty = True  # a step held for it may go now
        case StepFinished():
            _fold_step_finished(state, scope, message)
        case RunFinished():
            _fold_run_finished(state, scope, message)
        case _ if isinstance(message, TRIGGER_MESSAGES):
            fold_trigger(state.triggers, scope, message)
        case _:
            pass  # logs and requests are inputs: decide() acts on them (and on results)
    track(state, scope, message)
    _settle_placed(state, message)


# What can end a placed task's hold on its worker's slot (``Workers.settle``).
_SLOT_FREEING = (StepFinished, StepRetryScheduled, StepWaiting, RunFinished)


def _settle_placed(state: State, message: object) -> None:
    """After a message that can free a placed task's slot: free those it did."""
    if not isinstance(message, _SLOT_FREEING) or not state.workers.placed(message.run_id):
        return  # the usual case: no task of the run out on a worker's own consumer
    if state.workers.settle(message.run_id, _placed_out(state, message.run_id)):
        state.holds.dirty = True  # a worker's slot freed: a task held for one may go


def _placed_out(state: State, run_id: str) -> Callable[[str, int], bool]:
    """Whether a placed task of the run (its step's attempt) is still out with its worker:
    its task not folded yet (placed by the decision being folded), or the attempt is the
    step's current one, not over, and not in a durable wait (which gave its slot back)."""

    def out(name: str, attempt: int) -> bool:
        run = state.runs.get(run_id)
        step = None if run is None else run.steps.get(name)
        if step is None:
            return False
        if step.attempt < attempt:
            return True
        return (
            step.attempt == attempt
            and step.status in (RunStatus.QUEUED, RunStatus.RUNNING)
            and step.waiting is None
            and step.retry_due is None
        )

    return out


def _fold_run_finished(state: State, scope: Scope, message: RunFinished) -> None:
    if state.run(scope, message.run_id) is not None:
        over = state.runs.pop(message.run_id)
        _unlink(state, over)
        if over.group is not None:
            state.groups.remove(over.group, over.run_id)
        state.holds.drop(message.run_id)
        state.done.add(message.run_id)


def _fold_step_finished(state: State, scope: Scope, message: StepFinished) -> None:
    run = state.run(scope, message.run_id)
    if run is not None:
        fold_finished(run, message)
        state.holds.drop(message.run_id, message.step)  # a step held until it timed out


def _link(state: State, child: RunState) -> None:
    """A child run created: its parent (in flight, same namespace) now counts it."""
    parent = None if child.parent is None else state.run(child.scope, child.parent)
    if parent is not None:
        parent.children.setdefault(child.run_id)


def _unlink(state: State, child: RunState) -> None:
    """A child run over: its parent no longer has it in flight."""
    parent = None if child.parent is None else state.run(child.scope, child.parent)
    if parent is not None:
        parent.children.pop(child.run_id, None)


def fold_finished(run: RunState, message: StepFinished) -> None:
    """A step's verdict, folded into its run (the decisions predict with this too)."""
    step = run.steps.get(message.step)
    if step is None or step.terminal:
        return
    step.status = message.status
    step.attempt = max(step.attempt, message.attempt)
    reset_waits(step)
    step.output = message.output
    step.error = message.error
    step.retry_due = None
    step.held, step.held_wakes, step.held_reason = (), 0, None
    # Deliveries no longer matter once the step is over; forgetting them makes the state
    # the same whether a late assignment was folded before the verdict or after it.
    step.assigned = False
    step.delivery = step.handed_back = 0
    step.handed_back_at = None
    step.worker, step.moves, step.moved_from, step.lost = None, 0, None, 0
    if message.status is RunStatus.FAILED and not step.on_failure and run.failed_error is None:
        run.failed_error = f"step {message.step!r} failed: {message.error}"


def _fold_queued(state: State, scope: Scope, message: StepQueued | Task) -> None:
    """A step's attempt queued (its task), or queued again after a durable wait. A run's
    first task admits it (a run with a concurrency key waits for its turn until then). What
    it took of rate limits counts in their windows."""
    if isinstance(message, Task) and message.rate_limits:
        task_id = f"{message.run_id}:{message.step}:{message.attempt}:{len(message.wakes)}"
        task_id += f":moved:{message.moves}" if message.moves else ""  # runs again: takes again
        for use in message.rate_limits:
            when = parse_time(use.at)
            state.windows.add((scope, use.key), task_id, when, use.units, use.window_s)
    run = state.run(scope, message.run_id)
    if isinstance(message, Task) and message.worker_id is not None:
        _stick(run, message)
        if run is not None and message.moves and run.worker == message.moved_from:
            run.worker = message.worker_id  # its worker went: the run sticks to the new one
    if run is not None and not run.admitted:
        run.admitted = True
        if run.group is not None:
            state.groups.admit(run.group, run.run_id)
    step = _step(state, scope, message.run_id, message.step)
    if step is not None and _queues(step, message):
        offset = 0
        fresh = message.attempt > step.attempt
        if fresh:
            reset_waits(step)
        elif isinstance(message, Task):  # a durable step queued again (woken), or moved
            step.resumed = len(message.wakes)
            # Deliveries before the wake (or the move) count as handed back: only a later
            # one (offset + its own count) means a worker took the step again.
            offset = message.delivery_offset
        step.status = RunStatus.QUEUED
        step.attempt = message.attempt
        step.queued_at = parse_time(message.queued_at)
        step.assigned = False
        step.delivery = step.handed_back = offset
        _placed(step, message, fresh)
        step.handed_back_at = None
        step.retry_due = None
        step.held, step.held_wakes, step.held_reason = (), 0, None
        state.holds.drop(message.run_id, message.step)
        watch(state, message.run_id, step)  # its schedule timeout runs from now


def _fold_held(state: State, scope: Scope, message: StepHeld) -> None:
    """A ready step kept back (:mod:`dispatcher.holds`): its attempt is QUEUED (no task
    yet, so nobody picks it; its schedule timeout runs from the first hold), held for
    ``kind``. A later hold of the same attempt adds its kind and reason; a hold of an
    attempt already offered (or over) changes nothing."""
    step = _step(state, scope, message.run_id, message.step)
    if step is None or step.terminal:
        return
    same = message.attempt == step.attempt
    if same and step.held and message.wakes == step.held_wakes and message.moves == step.moves:
        if message.kind not in step.held:
            step.held = (*step.held, message.kind)
        step.held_reason = message.reason
        return
    moved = (
        same
        and message.moves > step.moves
        and message.wakes == step.resumed
        and step.waiting is None
        and not step.held
    )
    if message.attempt > step.attempt:  # a new attempt kept back (the first, a retry)
        reset_waits(step)
        step.delivery = step.handed_back = 0
        step.lost = 0
    elif moved:  # its task moved off a worker that went, and kept back
        step.lost = step.delivery
    elif not (
        same
        and message.wakes
        and step.waiting is None
        and step.resumed < message.wakes <= len(step.wakes)
    ):
        return  # not the step's next task: already offered, or stale
    step.status = RunStatus.QUEUED
    step.attempt = message.attempt
    step.queued_at = parse_time(message.at)
    step.assigned = False
    step.handed_back = step.delivery  # deliveries so far count as handed back (a wake)
    step.handed_back_at = None
    step.retry_due = None
    step.held, step.held_wakes, step.held_reason = (message.kind,), message.wakes, message.reason
    step.worker, step.moves, step.moved_from = None, message.moves, message.moved_from
    watch(state, message.run_id, step)  # its schedule timeout runs from now


def _placed(step: StepState, message: StepQueued | Task, fresh: bool) -> None:
    """Where the step's task went, and what moving it lost (:mod:`dispatcher.moved`)."""
    task = message if isinstance(message, Task) else None
    step.worker = None if task is None else task.worker_id
    step.moves = 0 if task is None else task.moves
    step.moved_from = None if task is None else task.moved_from
    if task is not None and task.moves:
        step.lost = task.delivery_offset
    elif fresh:
        step.lost = 0


def _stick(run: RunState | None, task: Task) -> None:
    """The run's worker, once: the first worker a task of it was placed on (the dispatcher's
    own decision, so the fold does not depend on the order workers' messages land in)."""
    if run is not None and run.worker is None:
        run.worker = task.worker_id


def _fold_wait(state: State, scope: Scope, message: StepWaiting | StepWoken, seq: int) -> None:
    run = state.run(scope, message.run_id)
    step = None if run is None else run.steps.get(message.step)
    if run is None or step is None:
        return
    if isinstance(message, StepWoken):
        _fold_woken(step, message)
    elif _fold_waiting(state, run, step, message, seq):
        watch(state, message.run_id, step)  # its sleep, if it has one


def next_wait(step: StepState, message: StepWaiting) -> bool:
    """Whether ``message`` is the step's next wait: of its current attempt, still going
    (not over, no retry scheduled: a late delivery of a failed attempt waits for nothing),
    the wait after its wakes, and the step not already waiting."""
    return (
        not step.terminal
        and not step.waiting_retry
        and message.attempt == step.attempt
        and message.index == len(step.wakes)
        and step.waiting is None
    )


def _fold_waiting(
    state: State, run: RunState, step: StepState, message: StepWaiting, seq: int
) -> bool:
    """The step's next wait (of its current attempt, while it runs): now its ``waiting``.
    False (nothing folded) for any other, and for one that can never end."""
    if not next_wait(step, message) or wait_problem(message) is not None:
        return False
    step.waiting = message
    step.waiting_seq = seq
    step.delivery = max(step.delivery, message.delivery)
    if any(c.kind is WaitKind.EVENT for c in message.conditions):
        state.event_waits.add(run.scope, run.run_id, step.spec.name)
    return True


def _fold_woken(step: StepState, message: StepWoken) -> None:
    """Wait ``index`` ended: one more wake for the attempt's next task to carry."""
    if (
        step.terminal
        or message.attempt != step.attempt
        or message.index != len(step.wakes)
        or step.waiting is None
    ):
        return
    step.waiting = None
    step.waiting_seq = 0
    step.wakes = (*step.wakes, message)


def reset_waits(step: StepState) -> None:
    """A new attempt (or the step's end): no wait, no wakes."""
    step.waiting = None
    step.waiting_seq = 0
    step.wakes = ()
    step.resumed = 0


def _queues(step: StepState, message: StepQueued | Task) -> bool:
    """Whether the message queues the step again: a later attempt, or the attempt's
    task once more after a wake (carrying more wakes than the last), while not over."""
    if step.terminal:
        return False
    if message.attempt > step.attempt:
        return True
    if step.held and message.attempt == step.attempt and isinstance(message, Task):
        # the task held, offered at last
        return len(message.wakes) == step.held_wakes and message.moves == step.moves
    return (
        isinstance(message, Task)
        and message.attempt == step.attempt
        and step.waiting is None
        and (
            step.resumed < len(message.wakes) <= len(step.wakes)
            or (len(message.wakes) == step.resumed and message.moves > step.moves)  # moved
        )
    )


def _step(state: State, scope: Scope, run_id: str, name: str) -> StepState | None:
    run = state.run(scope, run_id)
    return None if run is None else run.steps.get(name)
