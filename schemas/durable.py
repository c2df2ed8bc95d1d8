"""Durable steps: the waits a step records, and what ends them (`docs/durable.md`).

A step calling ``ctx.aio_sleep_for`` or ``ctx.aio_wait_for_event`` appends
``runs.<id>.waiting`` (its wait number ``index`` within the attempt, and the conditions
that end it, any one of them) and gives its slot back: the worker acks the task without a
result. The dispatcher answers with ``runs.<id>.woken`` (which condition ended it, the
event's payload) and queues the step again: the new task carries every wake so far, and
the step's code runs again from its start, each wait already woken returning its wake
at once. So a durable step's code must reach the same waits in the same order each time
(what it does between waits may be done again: make it idempotent, or a step of its own).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from schemas.structure import structure, utcnow


class WaitKind(enum.StrEnum):
    SLEEP = "sleep"  # until ``until``
    EVENT = "event"  # an event of ``event_key`` for which ``expression`` holds


@attrs.frozen
class WaitCondition:
    """One thing that ends a wait: a sleep until ``until`` (ISO-8601 UTC, fixed by the
    worker when it first waits, so a restart never sleeps again from zero), or an event of
    the run's namespace whose key is ``event_key`` (``*`` matches one part of it, as in
    ``on_events``) and for which the CEL ``expression`` (over ``input``,
    ``additional_metadata`` and ``event_key``, as in event filters) is true, if given."""

    kind: WaitKind = attrs.field(converter=WaitKind)
    until: str | None = None
    event_key: str | None = None
    expression: str | None = None


def _conditions(value: Iterable[WaitCondition | Mapping[str, Any]]) -> tuple[WaitCondition, ...]:
    return tuple(v if isinstance(v, WaitCondition) else structure(WaitCondition, v) for v in value)


@attrs.frozen
class StepWaiting:
    """``runs.<id>.waiting``: delivery ``delivery`` of the step's attempt waits (its wait
    ``index``, from 0, within the attempt) until any of ``conditions``; its worker gave the
    slot back. Appended by the worker (dedup id ``<run>:<step>:<attempt>:wait:<index>``)."""

    KIND = "waiting"
    run_id: str
    step: str
    attempt: int
    delivery: int
    index: int
    conditions: tuple[WaitCondition, ...] = attrs.field(converter=_conditions)
    worker_id: str = ""
    worker_name: str = ""
    at: str = attrs.field(factory=utcnow)
    v: int = 1


@attrs.frozen
class StepWoken:
    """``runs.<id>.woken``: wait ``index`` of the step's attempt ended by its condition
    ``condition`` (the index in the wait's conditions): a sleep that came due, or the event
    ``event_id`` (its stream sequence) of key ``event_key`` with ``payload``. Appended by
    the dispatcher, just before the step's task again."""

    KIND = "woken"
    run_id: str
    step: str
    attempt: int
    index: int
    condition: int
    kind: WaitKind = attrs.field(converter=WaitKind)
    event_key: str | None = None
    event_id: str | None = None
    payload: Any = None
    at: str = attrs.field(factory=utcnow)
    v: int = 1


def wakes(value: Iterable[StepWoken | Mapping[str, Any]]) -> tuple[StepWoken, ...]:
    """A task's wakes (converter)."""
    return tuple(v if isinstance(v, StepWoken) else structure(StepWoken, v) for v in value)


def wait_result(woken: StepWoken) -> dict[str, Any]:
    """What the step's wait returns once woken: which condition ended it, and for an event
    its key, id and payload."""
    result: dict[str, Any] = {"condition": woken.condition, "kind": str(woken.kind)}
    if woken.kind is WaitKind.EVENT:
        result |= {"event_key": woken.event_key, "event_id": woken.event_id}
        result["payload"] = woken.payload
    return result
