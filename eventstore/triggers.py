"""Crons and scheduled runs as clients see them: ask for them (append ``created`` or
``deleted`` to the log, which a tenant may), and list them from the log (the last record
of each subject, through a batched direct get, which a tenant may too).

Shared by the SDK (``hatchet.cron``, ``hatchet.scheduled``) and ``natchet cron|schedule``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs
from nats.aio.client import Client as NATS

from eventstore.append import Append, append
from eventstore.cronexpr import expression_problem, iso, next_fires, parse_instant
from eventstore.read import direct_last, direct_last_per_subject
from schemas.codec import DecodeError, decode_subject, encode, encode_json
from schemas.errors import NatchetError
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
from schemas.subjects import Scope, SubjectError, check_name, parse


class TriggerError(NatchetError, ValueError):
    """A cron or scheduled run that cannot be created or deleted, and why (one line)."""


@attrs.frozen
class CronView:
    """A cron as the log has it: ``next_fire`` is the tick its timer is armed for (None
    until the engine armed it), ``last_fire`` the last tick that fired."""

    name: str
    workflow: str
    expression: str
    timezone: str | None
    input: Any
    created_at: str
    id: str
    next_fire: str | None = None
    last_fire: str | None = None
    last_run_id: str | None = None

    def upcoming(self, count: int, now: dt.datetime) -> list[str]:
        """The next ``count`` ticks: the armed one, then cronsim's after it."""
        start = parse_instant(self.next_fire) if self.next_fire else now
        ticks = [start] if self.next_fire else []
        ticks += next_fires(self.expression, self.timezone, start, count - len(ticks))
        return [iso(t) for t in ticks]


@attrs.frozen
class ScheduleView:
    """A scheduled run as the log has it: ``status`` PENDING, FIRED (``run_id``),
    DELETED or REJECTED (``reason``)."""

    id: str
    workflow: str
    trigger_at: str
    input: Any
    created_at: str
    status: str
    run_id: str | None = None
    reason: str | None = None


async def check_workflow(nc: NATS, scope: Scope, workflow: str) -> None:
    """``TriggerError`` unless a worker registered ``workflow`` in ``scope``."""
    check(lambda: check_name("workflow", workflow))
    if await direct_last(nc, scope.tenant, scope.workflow(workflow)) is None:
        raise TriggerError(
            f"unknown workflow {workflow!r}: no worker has registered it in {scope.prefix}"
        )


def check(fn: Any) -> Any:
    try:
        return fn()
    except (SubjectError, ValueError) as exc:
        raise TriggerError(str(exc)) from None


async def create_cron(
    nc: NATS,
    scope: Scope,
    workflow: str,
    name: str,
    expression: str,
    input: Any = None,
    timezone: str | None = None,
    *,
    known_workflow: bool = True,
    cron_id: str | None = None,
) -> CronView:
    """Append the cron's ``created`` (replacing a cron of that name); the engine arms its
    first tick. ``known_workflow``: refuse a workflow no worker registered. ``cron_id``:
    a deterministic id (workers declaring ``on_crons``: two of them appending the same
    cron at once store it once)."""
    check(lambda: check_name("cron name", name))
    problem = expression_problem(expression, timezone)
    if problem is not None:
        raise TriggerError(problem)
    check(lambda: encode_json(input))
    if known_workflow:
        await check_workflow(nc, scope, workflow)
    else:
        check(lambda: check_name("workflow", workflow))
    ident = cron_id or str(uuid.uuid4())
    created = CronCreated(ident, name, workflow, expression, input, timezone)
    subject = scope.cron(name, "created")
    await append(nc, Append(subject, encode(created), f"{subject}:{created.id}"))
    return _cron_view(created)


async def delete_cron(nc: NATS, scope: Scope, name: str) -> None:
    """Append the cron's ``deleted``; ``TriggerError`` if there is no such cron. ``name``
    may also be the cron's id (Hatchet's SDK deletes crons by id)."""
    check(lambda: check_name("cron name", name))
    found = [c.name for c in await list_crons(nc, scope) if name in (c.name, c.id)]
    if not found:
        raise TriggerError(f"no cron named {name!r} in {scope.prefix}")
    name = found[0]
    subject = scope.cron(name, "deleted")
    await append(nc, Append(subject, encode(CronDeleted(name))))


async def create_schedule(
    nc: NATS,
    scope: Scope,
    workflow: str,
    trigger_at: dt.datetime | str,
    input: Any = None,
    *,
    now: dt.datetime | None = None,
    known_workflow: bool = True,
) -> ScheduleView:
    """Append a scheduled run's ``created``: ``workflow`` runs once at ``trigger_at``
    (timezone-aware; ``TriggerError`` if naive or in the past)."""
    when = check(lambda: _instant(trigger_at))
    now = now or dt.datetime.now(dt.UTC)
    if when <= now:
        raise TriggerError(f"trigger time {iso(when)} is in the past (it is now {iso(now)})")
    check(lambda: encode_json(input))
    if known_workflow:
        await check_workflow(nc, scope, workflow)
    else:
        check(lambda: check_name("workflow", workflow))
    created = ScheduleCreated(str(uuid.uuid4()), workflow, iso(when), input)
    subject = scope.schedule(created.schedule_id, "created")
    await append(nc, Append(subject, encode(created), subject))
    return ScheduleView(
        created.schedule_id, workflow, created.trigger_at, input, created.created_at, "PENDING"
    )


def _instant(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"trigger time {value} has no timezone: give an aware datetime")
        return value.astimezone(dt.UTC)
    return parse_instant(value)


async def delete_schedule(nc: NATS, scope: Scope, schedule_id: str) -> None:
    """Append the scheduled run's ``deleted``; ``TriggerError`` if none waits by that id."""
    check(lambda: check_name("schedule id", schedule_id))
    found = {s.id: s for s in await list_schedules(nc, scope)}.get(schedule_id)
    if found is None:
        raise TriggerError(f"no scheduled run {schedule_id!r} in {scope.prefix}")
    if found.status != "PENDING":
        raise TriggerError(f"scheduled run {schedule_id!r} is {found.status}: nothing to delete")
    subject = scope.schedule(schedule_id, "deleted")
    await append(nc, Append(subject, encode(ScheduleDeleted(schedule_id)), subject))


def _latest(records: list[Any], scope: Scope) -> dict[str, dict[str, tuple[int, Any]]]:
    """By cron name (or schedule id), by kind: (seq, message) of the last record."""
    out: dict[str, dict[str, tuple[int, Any]]] = {}
    for rec in records:
        try:
            parsed = parse(rec.subject)
            if parsed.scope != scope:
                continue
            message = decode_subject(parsed, rec.data)
        except (SubjectError, DecodeError):
            continue
        out.setdefault(parsed.name, {})[parsed.kind] = (rec.seq, message)
    return out


def _cron_view(created: CronCreated) -> CronView:
    c = created
    return CronView(c.name, c.workflow, c.expression, c.timezone, c.input, c.created_at, c.id)


async def list_crons(nc: NATS, scope: Scope) -> list[CronView]:
    """The crons of ``scope`` that exist (created, not deleted nor rejected), by name."""
    records = await direct_last_per_subject(nc, scope.tenant, f"{scope.prefix}.crons.>")
    out: list[CronView] = []
    for _name, kinds in sorted(_latest(records, scope).items()):
        if "created" not in kinds:
            continue
        seq, created = kinds["created"]
        assert isinstance(created, CronCreated)
        if kinds.get("deleted", (0, None))[0] > seq:
            continue
        rejected = kinds.get("rejected", (0, None))[1]
        if isinstance(rejected, CronRejected) and rejected.id == created.id:
            continue
        view = _cron_view(created)
        fired = kinds.get("fired", (0, None))[1]
        if isinstance(fired, CronFired) and fired.id == created.id:
            view = attrs.evolve(view, last_fire=fired.fire_at, last_run_id=fired.run_id)
        armed = kinds.get("armed", (0, None))[1]
        if (
            isinstance(armed, CronArmed)
            and armed.id == created.id
            and (view.last_fire is None or armed.fire_at > view.last_fire)
        ):
            view = attrs.evolve(view, next_fire=armed.fire_at)
        out.append(view)
    return out


async def list_schedules(nc: NATS, scope: Scope) -> list[ScheduleView]:
    """The scheduled runs of ``scope`` (all of them, with their status), by time."""
    records = await direct_last_per_subject(nc, scope.tenant, f"{scope.prefix}.schedules.>")
    out: list[ScheduleView] = []
    for sid, kinds in _latest(records, scope).items():
        if "created" not in kinds:
            continue
        created = kinds["created"][1]
        assert isinstance(created, ScheduleCreated)
        status, run_id, reason = "PENDING", None, None
        if "deleted" in kinds:
            status = "DELETED"
        fired = kinds.get("fired", (0, None))[1]
        rejected = kinds.get("rejected", (0, None))[1]
        if isinstance(fired, ScheduleFired):
            status, run_id = "FIRED", fired.run_id
        elif isinstance(rejected, ScheduleRejected):
            status, reason = "REJECTED", rejected.reason
        c = created
        out.append(
            ScheduleView(
                sid, c.workflow, c.trigger_at, c.input, c.created_at, status, run_id, reason
            )
        )
    return sorted(out, key=lambda s: (s.trigger_at, s.id))
