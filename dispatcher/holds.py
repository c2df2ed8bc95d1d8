"""Flow control's gates: which offered tasks go to the workers now, which wait, and when a
waiting one goes. Pure: decisions over the folded state.

Every decision's outputs pass through :func:`gate` (``dispatcher.step.settle``: decisions
on inputs, due retries and timeouts, a restart's ``complete``, admissions). Each task
output goes through the gates in order:

- :class:`Go`: the next gate looks at it; a gate may send it to another subject (a
  placement) or record in it what it used (a rate limit's units). Through every gate,
  it is appended.
- :class:`Hold`: it is kept back, in memory, in ``state.holds`` (:mod:`dispatcher.held`),
  and the step's ``runs.<id>.held`` is appended instead, once per attempt and kind
  (:class:`schemas.holds.StepHeld`). The step is QUEUED (nobody can pick it: there is no
  task), holds no worker slot, and its ``schedule_timeout`` runs.
- :class:`Fail`: the step can never run (its units exceed its rate limit, say): it fails
  for good with the gate's reason, as a step failing would (its run's on-failure step, or
  the run's end, follow, through the gates in turn).
- :class:`Cancel`: runs must end first (a step key's ``CANCEL_*`` strategy): each is
  cancelled with its reason (``decide.cancel_run``: its children with it, the dedup ids a
  cancellation always has), appended before the task, and the task is judged again: it is
  dropped if its own run was among them, else the gates look at it anew (now with room).

Every output is folded before the next is judged, so two tasks of one decision never both
take the last unit of something.

:func:`release` retries the held tasks, in line (``Holds.in_line``), when a gate's
``recheck_at`` has come or something a gate reads changed (``state.holds.dirty``: a rate
limit set, a worker's labels): each that passes now is appended as its own decision, with
the dedup id its task had; one still held stays, keeping its place. A held task of a step
that moved on (timed out, its run ended) is forgotten. After a restart the log holds each
held step's ``held`` record and not its task: ``decide.complete`` makes the task again, with
the same dedup id, and it goes through the gates again.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import attrs

from dispatcher.decide import Output, cancel_run, fail_step
from dispatcher.folding import fold
from dispatcher.held import HeldTask
from dispatcher.policy import iso
from dispatcher.state import RunState, State, StepState, timed_out_at
from schemas.holds import HoldKind, StepHeld
from schemas.messages import Task
from schemas.subjects import parse


@attrs.frozen
class Go:
    """The task may go on: to ``subject`` if given, as ``task`` if given."""

    subject: str | None = None
    task: Task | None = None


@attrs.frozen
class Hold:
    """Keep the task back for ``kind``; ``reason`` is what a user reads (``runs get``);
    look again at ``recheck_at`` (None: when ``state.holds.dirty`` says something
    changed)."""

    kind: HoldKind
    reason: str
    recheck_at: dt.datetime | None = None


@attrs.frozen
class Fail:
    """The step can never pass this gate: it fails for good, for ``reason``."""

    reason: str


@attrs.frozen
class Cancel:
    """End these runs first, each ``(run id, reason)``, then judge the task again."""

    runs: tuple[tuple[str, str], ...]


Verdict = Go | Hold | Fail | Cancel
# Shown what gating adds to a decision before it is folded, and the decision's tasks it
# withdraws (never folded, never to go): ``gate``'s ``seen``.
Seen = Callable[[list[Output], list[Output]], None]


class Gate(Protocol):
    """One flow-control rule: pure, over the folded state (the task's run and step are in
    flight; the step is ready, not yet offered)."""

    def __call__(
        self, state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
    ) -> Verdict: ...


def gate(
    state: State,
    outputs: Sequence[Output],
    now: dt.datetime,
    gates: Sequence[Gate],
    seen: Seen | None = None,
) -> list[Output]:
    """Fold ``outputs`` into ``state`` in order, each task through ``gates`` first; return
    what to append (the tasks that passed, the ``held`` records and verdicts of those that
    did not, the other outputs as they were). ``seen`` is shown the outputs a verdict adds
    (a failed step's end, the runs a strategy cancels) before they are folded, as the
    caller saw the decision's own, and the first tasks that never go because their runs
    ended first (a strategy cancelled them, another step failed): what the engine's
    counters count. Such a task's step ends at attempt 0: it was never a task."""
    out: list[Output] = []
    pending = deque(outputs)
    unfolded: set[str] = set()  # first tasks of steps with no attempt folded, by dedup id
    cancelled: set[str] = set()  # runs a strategy ended in this decision
    while pending:
        o = pending.popleft()
        if not isinstance(o.message, Task) and _ended_here(state, o, cancelled):
            continue  # (a task of it is judged: it goes nowhere, and is taken back below)
        if isinstance(o.message, Task) and gates:
            judged = _judge(state, o, now, gates)
            if isinstance(judged, Fail):
                run, step = _step_of(state, o)
                assert run is not None and step is not None
                verdicts = fail_step(run, step, o.message.attempt, judged.reason, now)
                if seen is not None:
                    seen(verdicts, [])
                    unfolded |= _first_tasks(state, pending, {run.run_id})
                pending.extendleft(reversed(verdicts))
                continue
            if isinstance(judged, Cancel):
                cancelled |= {r for r, _ in judged.runs}
                ends = _cancelled(state, o, judged, now)
                if seen is not None:
                    seen(ends, [])
                    unfolded |= _first_tasks(state, [o, *pending], {r for r, _ in judged.runs})
                pending.extendleft(reversed([*ends, o]))
                continue
            if isinstance(judged, HeldTask):
                out += _hold(state, o, judged, now)
                continue
            if judged is None:  # its run ended or failed earlier in this decision: not offered
                if seen is not None and o.msg_id in unfolded:
                    seen([], [o])
                continue
            o = judged
        fold(state, parse(o.subject).scope, o.message)
        out.append(o)
    return out


def _ended_here(state: State, o: Output, cancelled: set[str]) -> bool:
    """Whether ``o`` is of a run a strategy ended earlier in this decision (an event that
    woke it, say): nothing more of a run over is appended."""
    run_id = getattr(o.message, "run_id", None)
    return run_id in cancelled and run_id not in state.runs


def release(
    state: State, now: dt.datetime, gates: Sequence[Gate], seen: Seen | None = None
) -> list[list[Output]]:
    """The held tasks that pass their gates now, each its own decision (folded), in line;
    nothing unless a recheck is due or something changed (``Holds.due``)."""
    holds = state.holds
    if not holds.due(now):
        return []
    decisions: list[list[Output]] = []
    for key, held in holds.in_line():
        if holds.tasks.get(key) is not held:
            continue  # dropped by a decision made in this pass
        run, step = _step_of(state, held.output)
        if run is None or step is None or not _still_held(step, held.output.message):
            holds.drop(*key)  # its step moved on (timed out, run ended, ...)
            continue
        if run.failed_error and not step.on_failure:
            holds.drop(*key)  # a failing run releases nothing more (but its on-failure step)
            continue
        since = step.waiting_since
        if since is not None and timed_out_at(since, run.schedule_timeout_s) <= now:
            continue  # its schedule_timeout is due: that fails it (a due pass), not offered
        output = held.output
        if step.on_failure:  # the steps that failed meanwhile: as if decided now
            task = attrs.evolve(output.message, step_errors=run.step_errors())
            output = Output(output.subject, task, output.msg_id, headers=output.headers)
        decision = gate(state, [output], now, gates, seen)
        if decision:
            decisions.append(decision)
    holds.rechecked()
    return decisions


def _cancelled(state: State, o: Output, verdict: Cancel, now: dt.datetime) -> list[Output]:
    """The ends of the runs ``verdict`` names (of the task's scope, in order). Each named
    run is in flight (a gate names runs it counts), so each pass ends one at least and the
    task's next judgement sees fewer: judging again terminates."""
    scope = parse(o.subject).scope
    out: list[Output] = []
    for run_id, reason in verdict.runs:
        run = state.run(scope, run_id)
        if run is not None:
            out += cancel_run(state, run, reason, now)
    if not out:  # judging the task again would give the same verdict, for ever
        raise RuntimeError(f"{verdict!r}: none of its runs is in flight")
    return out


def _first_tasks(state: State, outputs: Iterable[Output], runs: set[str]) -> set[str]:
    """The dedup ids of the tasks among ``outputs`` of ``runs`` that are their steps' first
    (attempt 1, not a move) with no attempt of the step folded yet: whoever saw the
    decision they came in counted them ``created``. Asked just before those runs end."""
    found = set()
    for o in outputs:
        task = o.message
        if not isinstance(task, Task) or task.run_id not in runs:
            continue
        if task.attempt != 1 or task.moves:
            continue
        _, step = _step_of(state, o)
        if step is not None and step.attempt == 0:
            found.add(o.msg_id)
    return found


def _step_of(state: State, o: Output) -> tuple[RunState | None, StepState | None]:
    task: Task = o.message
    run = state.run(parse(o.subject).scope, task.run_id)
    return run, None if run is None else run.steps.get(task.step)


def _still_held(step: StepState, task: Task) -> bool:
    return (
        bool(step.held)
        and not step.terminal
        and step.attempt == task.attempt
        and step.held_wakes == len(task.wakes)
        and step.moves == task.moves
    )


def _judge(
    state: State, o: Output, now: dt.datetime, gates: Sequence[Gate]
) -> Output | HeldTask | Fail | Cancel | None:
    """The task as it goes (``Output``), held (``HeldTask``), failed, runs to cancel
    first, or dropped (None: its run is over)."""
    task: Task = o.message
    run, step = _step_of(state, o)
    if run is None or step is None:
        return None if state.known(task.run_id) else o
    if run.failed_error and not step.on_failure and step.status is None:
        return None  # a step failed (a gate's Fail) earlier in this decision: release no more
    subject = o.subject
    for g in gates:
        verdict = g(state, run, step, task, now)
        if isinstance(verdict, Fail | Cancel):
            return verdict
        if isinstance(verdict, Hold):
            scope = run.scope
            priority = getattr(o.message, "priority", None) or 1  # none: 1, the default
            return HeldTask(scope, o, verdict.kind, verdict.reason, verdict.recheck_at, priority)
        subject = verdict.subject or subject
        task = verdict.task or task
    if subject == o.subject and task is o.message:
        return o
    return Output(subject, task, o.msg_id, headers=o.headers)


def _hold(state: State, o: Output, held: HeldTask, now: dt.datetime) -> list[Output]:
    """Keep the task back; the step's ``held`` record, unless it is held for that already."""
    task: Task = o.message
    run, step = _step_of(state, o)
    assert run is not None and step is not None
    out: list[Output] = []
    if not (_still_held(step, task) and held.kind in step.held):
        record = StepHeld(
            run_id=task.run_id,
            step=task.step,
            attempt=task.attempt,
            kind=held.kind,
            reason=held.reason,
            at=iso(now),
            wakes=len(task.wakes),
            moves=task.moves,
            moved_from=task.moved_from,
        )
        suffix = f":{len(task.wakes)}" if task.wakes else ""
        suffix += f":moved:{task.moves}" if task.moves else ""
        msg_id = f"{task.run_id}:{task.step}:{task.attempt}:held:{held.kind}{suffix}"
        said = Output(run.scope.run(task.run_id, "held"), record, msg_id)
        fold(state, run.scope, record)
        out.append(said)
    state.holds.keep((task.run_id, task.step), held)
    return out
