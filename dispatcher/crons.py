"""The dispatcher's crons and scheduled runs: a fold of their records in the log. Pure.

A cron is kept while it exists (created, not deleted or rejected) with ``pending``, the
tick its timer is armed for and has not yet fired. A schedule is kept while it waits for
its time. Those that end (deleted, rejected, fired) leave their key in ``done`` so that a
``created`` folded again (a snapshot's overlap, a redelivered input) does not revive them.
"""

from __future__ import annotations

import attrs

from eventstore.cronexpr import expression_problem, parse_instant
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
)
from schemas.subjects import Scope, SubjectError, check_name

TRIGGER_MESSAGES = (
    CronCreated,
    CronDeleted,
    CronArmed,
    CronFired,
    CronRejected,
    ScheduleCreated,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleRejected,
)


@attrs.define
class CronState:
    spec: CronCreated
    pending: str | None = None  # the tick armed and not yet fired
    last_fire: str | None = None


@attrs.define
class ScheduleState:
    spec: ScheduleCreated


@attrs.define
class Triggers:
    crons: dict[tuple[Scope, str], CronState] = attrs.Factory(dict)
    schedules: dict[tuple[Scope, str], ScheduleState] = attrs.Factory(dict)
    done: set[str] = attrs.Factory(set)


def cron_key(scope: Scope, cron_id: str) -> str:
    return f"{scope.prefix}/cron/{cron_id}"


def schedule_key(scope: Scope, schedule_id: str) -> str:
    return f"{scope.prefix}/schedule/{schedule_id}"


def cron_problem(spec: CronCreated) -> str | None:
    """Why a ``created`` cannot be a cron; None when it can."""
    try:
        check_name("workflow", spec.workflow)
    except (SubjectError, TypeError) as exc:
        return str(exc)
    if not isinstance(spec.expression, str) or not (
        spec.timezone is None or isinstance(spec.timezone, str)
    ):
        return "the expression and the timezone must be strings"
    return expression_problem(spec.expression, spec.timezone)


def schedule_problem(spec: ScheduleCreated) -> str | None:
    """Why a ``created`` cannot be a scheduled run; None when it can."""
    try:
        check_name("workflow", spec.workflow)
        if not isinstance(spec.trigger_at, str):
            return "trigger_at must be an ISO 8601 time"
        parse_instant(spec.trigger_at)
    except (SubjectError, TypeError, ValueError) as exc:
        return str(exc)
    return None


def fold_trigger(triggers: Triggers, scope: Scope, message: object) -> None:
    """Apply one cron or schedule record. Idempotent, like the rest of the fold."""
    crons, done = triggers.crons, triggers.done
    match message:
        case CronCreated():
            key = (scope, message.name)
            current = crons.get(key)
            if cron_key(scope, message.id) in done or cron_problem(message) is not None:
                return
            if current is not None and current.spec.id == message.id:
                return
            if current is not None:
                done.add(cron_key(scope, current.spec.id))  # replaced
            crons[key] = CronState(message)
        case CronDeleted() | CronRejected():
            key = (scope, message.name)
            current = crons.get(key)
            if isinstance(message, CronRejected):
                done.add(cron_key(scope, message.id))
                if current is not None and current.spec.id != message.id:
                    return
            if current is not None:
                done.add(cron_key(scope, current.spec.id))
                del crons[key]
        case CronArmed():
            current = crons.get((scope, message.name))
            if (
                current is not None
                and current.spec.id == message.id
                and (current.last_fire is None or message.fire_at > current.last_fire)
            ):
                current.pending = message.fire_at
        case CronFired():
            current = crons.get((scope, message.name))
            if current is not None and current.spec.id == message.id:
                if current.last_fire is None or message.fire_at > current.last_fire:
                    current.last_fire = message.fire_at
                if current.pending is not None and current.pending <= message.fire_at:
                    current.pending = None
        case ScheduleCreated():
            key = (scope, message.schedule_id)
            if schedule_key(scope, message.schedule_id) in done:
                return
            if schedule_problem(message) is None and key not in triggers.schedules:
                triggers.schedules[key] = ScheduleState(message)
        case ScheduleDeleted() | ScheduleFired() | ScheduleRejected():
            triggers.done.add(schedule_key(scope, message.schedule_id))
            triggers.schedules.pop((scope, message.schedule_id), None)
        case _:
            pass
