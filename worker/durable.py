"""Durable waits in a step: sleep, wait for an event, or either, without holding a slot.

A step's wait number ``i`` (counted from 0 within the attempt) either was woken already
(the task carries the wake: it returns at once) or is new: the worker appends ``waiting``
and stops the step (:class:`Suspended`), acking its task without a result, so the slot is
free. When the dispatcher wakes it, the step runs again from its start, on any worker, and
each wait already woken returns its wake. So the step must reach the same waits in the
same order each run; work between waits may run again (docs/durable.md).
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from schemas.durable import WaitCondition, WaitKind, wait_result
from schemas.errors import ConfigError
from schemas.filters import filter_error
from schemas.messages import Task
from worker.declare import Duration, seconds


@attrs.frozen
class SleepCondition:
    """Wake after ``duration`` (seconds, a timedelta, or ``"5m"``), counted from when the
    step first reached the wait: a restart never starts the sleep again."""

    duration: Duration


@attrs.frozen
class UserEventCondition:
    """Wake on an event of the run's namespace whose key is ``event_key`` (``*``: any
    characters) and for which the CEL ``expression`` over ``input`` (the event's payload),
    ``additional_metadata`` and ``event_key`` is true (None: any such event)."""

    event_key: str
    expression: str | None = None


@attrs.frozen
class OrGroup:
    """Whichever of its conditions comes first."""

    conditions: tuple[SleepCondition | UserEventCondition, ...]


Condition = SleepCondition | UserEventCondition | OrGroup


def require_async(fn: Callable[..., Any], what: str) -> None:
    """A durable task is an async function: its waits suspend it (ConfigError else)."""
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(f"{what} must be an async function (async def): its waits suspend it")


def or_(*conditions: SleepCondition | UserEventCondition) -> OrGroup:
    return OrGroup(tuple(conditions))


class Suspended(BaseException):
    """Raised in a step at a wait not yet woken, once ``waiting`` is in the log: the step
    stops there and its worker acks the task without a result. A BaseException, so that a
    step's ``except Exception`` does not catch it."""


# Appends the attempt's wait (its index and conditions), then raises Suspended.
Suspend = Callable[[int, tuple[WaitCondition, ...]], Awaitable[None]]


class Waits:
    """One attempt's waits, counted in the order the step reaches them."""

    def __init__(self, task: Task, suspend: Suspend | None) -> None:
        self._wakes = task.wakes
        self._suspend = suspend
        self._next = 0

    async def wait_for(self, *conditions: Condition) -> dict[str, Any]:
        """Until the first of ``conditions``: ``{"condition": i, "kind": "sleep"}`` or
        ``{"condition": i, "kind": "event", "event_key", "event_id", "payload"}``, where
        ``i`` is the condition's place among them (an ``or_`` group's spread in order)."""
        wire = conditions_of(conditions, dt.datetime.now(dt.UTC))
        index = self._next
        self._next += 1
        if index < len(self._wakes):
            return wait_result(self._wakes[index])
        if self._suspend is None:
            raise RuntimeError("durable waits need a step's context (an async step's)")
        await self._suspend(index, wire)
        raise Suspended(index)  # the suspend raises it itself; this keeps mypy sure


def conditions_of(conditions: tuple[Condition, ...], now: dt.datetime) -> tuple[WaitCondition, ...]:
    """The conditions as the wire carries them (a sleep's end fixed from ``now``), checked:
    a clear :class:`ConfigError` for what could never wake the step."""
    flat: list[SleepCondition | UserEventCondition] = []
    for c in conditions:
        flat.extend(c.conditions if isinstance(c, OrGroup) else (c,))
    if not flat:
        raise ConfigError("a durable wait needs at least one condition")
    out = []
    for c in flat:
        if isinstance(c, SleepCondition):
            until = now + dt.timedelta(seconds=seconds(c.duration, "sleep duration"))
            out.append(WaitCondition(WaitKind.SLEEP, until=until.isoformat()))
        elif isinstance(c, UserEventCondition):
            if not isinstance(c.event_key, str) or not c.event_key:
                raise ConfigError("an event condition needs an event key")
            refused = filter_error(c.expression)
            if refused is not None:
                raise ConfigError(refused)
            out.append(
                WaitCondition(WaitKind.EVENT, event_key=c.event_key, expression=c.expression)
            )
        else:
            raise ConfigError(
                f"{c!r} is not a wait condition (SleepCondition, UserEventCondition or or_(...))"
            )
    return tuple(out)
