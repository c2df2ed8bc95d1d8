"""Decisions on crons and scheduled runs, and on their timers' fires. Pure.

A cron ``created`` is answered with ``armed`` (its first tick, from now) or ``rejected``;
a schedule ``created`` with nothing (its time is in the record) or ``rejected``. A fire
(a :class:`Fire`, read from the ``schedules-<t>`` stream) of the tick a cron is armed
for, or of a schedule still waiting, starts its run (a deterministic id: a fire decided
twice starts one run), records ``fired`` and, for a cron, arms the next tick after the
later of the tick and now (``eventstore.cronexpr.rearm_after``): a late fire starts one run,
never one per tick missed. A fire the state does not expect (the cron was deleted or
replaced, the schedule deleted or already fired) decides nothing.

What the dispatcher does to the timers themselves (:class:`TimerOp`) follows from the
same inputs and outputs (:func:`timer_ops`), once the log holds them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from dispatcher.crons import cron_problem, schedule_problem
from dispatcher.decide import Output, create, reject
from dispatcher.policy import iso
from dispatcher.state import State
from eventstore.cronexpr import (
    cron_run_id,
    next_fire,
    parse_instant,
    rearm_after,
    schedule_run_id,
)
from schemas.messages import (
    CronArmed,
    CronCreated,
    CronDeleted,
    CronFired,
    CronRejected,
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleRejected,
    Trigger,
    TriggerKind,
)
from schemas.subjects import Scope

CRON, SCHEDULE = "cron", "schedule"


@attrs.frozen
class Fire:
    """A timer come due: cron ``name`` (of id ``id``) at tick ``fire_at``, or schedule
    ``name`` (``id`` is its id again)."""

    kind: str
    name: str
    id: str
    fire_at: str


@attrs.frozen
class TimerOp:
    """Set (``fire_at``) or clear (None) the timer of a cron or schedule."""

    scope: Scope
    kind: str
    name: str
    id: str = ""
    fire_at: str | None = None


def decide_trigger(state: State, scope: Scope, message: object, now: dt.datetime) -> list[Output]:
    match message:
        case CronCreated():
            return _on_cron_created(state, scope, message, now)
        case ScheduleCreated():
            problem = schedule_problem(message)
            if problem is None:
                return []
            rejected = ScheduleRejected(message.schedule_id, problem, at=iso(now))
            subject = scope.schedule(message.schedule_id, "rejected")
            return [Output(subject, rejected, f"{subject}:{message.created_at}")]
        case Fire(kind="cron"):
            return _cron_fired(state, scope, message, now)
        case Fire(kind="schedule"):
            return _schedule_fired(state, scope, message, now)
        case _:
            return []  # a delete only folds (and clears the timer)


def _on_cron_created(
    state: State, scope: Scope, message: CronCreated, now: dt.datetime
) -> list[Output]:
    problem = cron_problem(message)
    if problem is not None:
        rejected = CronRejected(message.name, message.id, problem, at=iso(now))
        subject = scope.cron(message.name, "rejected")
        return [Output(subject, rejected, f"{subject}:{message.id}")]
    current = state.triggers.crons.get((scope, message.name))
    if current is not None and current.spec.id == message.id and current.pending is not None:
        return []  # decided already (a redelivered input)
    if current is None and _ended(state, scope, message.id):
        return []
    return [_armed(scope, message, next_fire(message.expression, message.timezone, now), now)]


def _ended(state: State, scope: Scope, cron_id: str) -> bool:
    return f"{scope.prefix}/cron/{cron_id}" in state.triggers.done


def _armed(scope: Scope, spec: CronCreated, fire_at: dt.datetime, now: dt.datetime) -> Output:
    tick = iso(fire_at)
    armed = CronArmed(spec.name, spec.id, tick, at=iso(now))
    subject = scope.cron(spec.name, "armed")
    return Output(subject, armed, f"{subject}:{spec.id}:{tick}")


def _start(
    state: State, scope: Scope, workflow: str, run_id: str, payload: Any, trigger: Trigger,
    now: dt.datetime,
) -> list[Output]:  # fmt: skip
    """The run a fire starts: created, or rejected when no worker registered its workflow
    (its recorded end). Nothing when the run exists already."""
    if state.known(run_id):
        return []
    wf = state.workflows.get((scope, workflow))
    if wf is None:
        reason = f"no worker has registered workflow {workflow!r} in {scope.prefix}"
        return reject(scope, run_id, workflow, reason, now)
    return create(scope, wf, run_id, payload, trigger, now)


def _cron_fired(state: State, scope: Scope, fire: Fire, now: dt.datetime) -> list[Output]:
    cron = state.triggers.crons.get((scope, fire.name))
    if cron is None or cron.spec.id != fire.id or cron.pending != fire.fire_at:
        return []  # deleted, replaced, or a tick already fired
    spec = cron.spec
    run_id = cron_run_id(scope.prefix, spec.name, fire.fire_at)
    trigger = Trigger(TriggerKind.CRON, cron=spec.name, fire_at=fire.fire_at)
    out = _start(state, scope, spec.workflow, run_id, spec.input, trigger, now)
    fired = CronFired(spec.name, spec.id, fire.fire_at, run_id, at=iso(now))
    subject = scope.cron(spec.name, "fired")
    out.append(Output(subject, fired, f"{subject}:{spec.id}:{fire.fire_at}"))
    after = rearm_after(parse_instant(fire.fire_at), now)
    out.append(_armed(scope, spec, next_fire(spec.expression, spec.timezone, after), now))
    return out


def _schedule_fired(state: State, scope: Scope, fire: Fire, now: dt.datetime) -> list[Output]:
    schedule = state.triggers.schedules.get((scope, fire.name))
    if schedule is None:
        return []  # deleted, or fired already
    spec = schedule.spec
    run_id = schedule_run_id(scope.prefix, spec.schedule_id)
    due = iso(parse_instant(spec.trigger_at))
    trigger = Trigger(TriggerKind.SCHEDULE, schedule_id=spec.schedule_id, fire_at=due)
    out = _start(state, scope, spec.workflow, run_id, spec.input, trigger, now)
    fired = ScheduleFired(spec.schedule_id, run_id, at=iso(now))
    subject = scope.schedule(spec.schedule_id, "fired")
    out.append(Output(subject, fired, f"{subject}:{run_id}"))
    return out


def complete_triggers(state: State, now: dt.datetime) -> list[list[Output]]:
    """Crons with no tick armed (a decision cut short between ``fired`` and ``armed``, or
    before ``armed``): arm their next tick from now."""
    return [
        [_armed(scope, cron.spec, next_fire(cron.spec.expression, cron.spec.timezone, now), now)]
        for (scope, _name), cron in sorted(
            state.triggers.crons.items(), key=lambda kv: (kv[0][0].prefix, kv[0][1])
        )
        if cron.pending is None
    ]


def pending_timers(state: State) -> list[TimerOp]:
    """Every timer the state says should be set (re-ensured at each start)."""
    ops = [
        TimerOp(scope, CRON, name, cron.spec.id, cron.pending)
        for (scope, name), cron in state.triggers.crons.items()
        if cron.pending is not None
    ]
    ops += [
        TimerOp(scope, SCHEDULE, sid, sid, iso(parse_instant(s.spec.trigger_at)))
        for (scope, sid), s in state.triggers.schedules.items()
    ]
    return ops


def timer_ops(
    state: State, scope: Scope | None, message: object, outputs: list[Output]
) -> list[TimerOp]:
    """What to do to the timers once an input (``message`` of ``scope``) and its decision
    are stored (``state`` has folded both): a schedule created and still waiting sets its
    timer, a delete clears it, a cron armed sets its timer for that tick."""
    ops: list[TimerOp] = []
    if scope is not None:
        match message:
            case ScheduleCreated() if (scope, message.schedule_id) in state.triggers.schedules:
                when = iso(parse_instant(message.trigger_at))
                ops.append(TimerOp(scope, SCHEDULE, message.schedule_id, message.schedule_id, when))
            case ScheduleDeleted():
                ops.append(TimerOp(scope, SCHEDULE, message.schedule_id))
            case CronDeleted():
                ops.append(TimerOp(scope, CRON, message.name))
    for out in outputs:
        if isinstance(out.message, CronArmed):
            armed = out.message
            prefix = out.subject.split(".crons.", 1)[0]
            tenant, namespace = prefix.split(".", 1)
            ops.append(TimerOp(Scope(tenant, namespace), CRON, armed.name, armed.id, armed.fire_at))
    return ops
