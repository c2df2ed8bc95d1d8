"""Cron expressions and times of crons and scheduled runs: the rules the SDK, the CLI and
the dispatcher share. Pure: no IO, and no clock (``now`` is always given).

Expressions are cronsim's (a well-kept parser; natchet writes none): 5 fields, or 6 with
seconds first, evaluated in a timezone (an IANA name; UTC when none is given).
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo

from cronsim import CronSim, CronSimError

# Run ids of fires derive from this (uuid5), so deciding a fire twice creates one run.
TRIGGER_RUN_NAMESPACE = uuid.UUID("3b8f3e5c-7a61-4d7e-9a0c-2f4e1c9b5d14")


def zone(name: str | None) -> dt.tzinfo:
    """The timezone ``name`` (None: UTC); ``ValueError`` naming it if there is none."""
    if name is None or name in ("UTC", "Z"):
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as Europe/Paris") from (
            exc
        )


def expression_problem(expression: str, timezone: str | None = None) -> str | None:
    """Why ``expression`` (in ``timezone``) cannot be a cron, in one line that says where
    and what; None when it can."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return (
            f"cron expression {expression!r} has {len(fields)} fields: use 5 (minute hour "
            "day-of-month month day-of-week) or 6 (seconds first)"
        )
    try:
        tz = zone(timezone)
    except ValueError as exc:
        return str(exc)
    try:
        next(CronSim(expression, dt.datetime(2000, 1, 1, tzinfo=tz)))
    except CronSimError as exc:
        return f"cron expression {expression!r}: {_where(exc, len(fields))}"
    except StopIteration:
        return f"cron expression {expression!r} never fires"
    return None


_FIELDS5 = ("minute", "hour", "day-of-month", "month", "day-of-week")


def _where(exc: CronSimError, count: int) -> str:
    """cronsim's reason ("Bad minute"), with the field's position."""
    text = str(exc)
    names = ("second", *_FIELDS5) if count == 6 else _FIELDS5
    said = text.lower().removeprefix("bad ").strip()
    for position, name in enumerate(names, 1):
        if said == name:
            return f"field {position} ({name}) is invalid"
    return text


def next_fire(expression: str, timezone: str | None, after: dt.datetime) -> dt.datetime:
    """The first tick of the cron strictly after ``after``, in UTC. ``ValueError`` if the
    expression is not a cron (:func:`expression_problem`) or never fires again."""
    problem = expression_problem(expression, timezone)
    if problem is not None:
        raise ValueError(problem)
    start = after.astimezone(zone(timezone))
    try:
        tick = next(CronSim(expression, start))
    except StopIteration:
        raise ValueError(f"cron expression {expression!r} never fires again") from None
    return tick.astimezone(dt.UTC)


def next_fires(
    expression: str, timezone: str | None, after: dt.datetime, count: int
) -> list[dt.datetime]:
    """The next ``count`` ticks after ``after`` (what ``cron list`` shows)."""
    out: list[dt.datetime] = []
    for _ in range(count):
        after = next_fire(expression, timezone, after)
        out.append(after)
    return out


def rearm_after(fire_at: dt.datetime, now: dt.datetime) -> dt.datetime:
    """Where the next fire is looked for once tick ``fire_at`` fired, at ``now``: after
    both. A fire read late (the engine was down across ticks) starts its one run and the
    cron goes on from now, so the ticks missed meanwhile start nothing: never one run per
    missed tick."""
    return max(fire_at, now)


def cron_run_id(prefix: str, name: str, fire_at: str) -> str:
    """The run a cron's tick starts: the same for the same tenant, namespace, cron name and
    tick, so a tick decided twice starts one run."""
    return str(uuid.uuid5(TRIGGER_RUN_NAMESPACE, f"{prefix}/cron/{name}/{fire_at}"))


def schedule_run_id(prefix: str, schedule_id: str) -> str:
    """The run a scheduled run starts (one per schedule, however often it is decided)."""
    return str(uuid.uuid5(TRIGGER_RUN_NAMESPACE, f"{prefix}/schedule/{schedule_id}"))


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 time with an offset (or ``Z``), in UTC; ``ValueError`` otherwise."""
    try:
        when = dt.datetime.fromisoformat(
            text.replace("Z", "+00:00") if text.endswith("Z") else text
        )
    except (TypeError, ValueError):
        raise ValueError(f"time {text!r} is not ISO 8601 (e.g. 2026-12-31T23:59:00Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset: add Z for UTC, or +01:00 and the like")
    return when.astimezone(dt.UTC)


def iso(when: dt.datetime) -> str:
    """A UTC time as natchet writes it (microseconds, ``+00:00``)."""
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")
