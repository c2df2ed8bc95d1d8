"""Durable steps' waits, as the dispatcher checks and indexes them (:mod:`schemas.durable`;
folded in :mod:`dispatcher.folding`, ended in :mod:`dispatcher.wakes`). Pure: no IO, no
clocks.

A step's worker appends ``waiting`` (wait ``index`` of the attempt) and acks its task: the
step holds no slot. Folded, the wait is the step's ``waiting``; its sleeps put a deadline
in the state's heap, its events an entry in :class:`EventWaits`. The first condition met
ends it: the dispatcher appends ``woken``, then the step's task again with every wake of
the attempt (``decide``). A wait that is not the step's next one (a stale delivery's,
or one already woken) folds to nothing.
"""

from __future__ import annotations

import datetime as dt

from dispatcher.policy import parse_time
from schemas.durable import StepWaiting, WaitKind
from schemas.filters import filter_error
from schemas.subjects import Scope

MAX_CONDITIONS = 16


def wait_problem(waiting: StepWaiting) -> str | None:
    """Why a wait can never end, or None: no condition, too many, a sleep without a time
    that parses, an event without a key, an expression that does not compile."""
    if not waiting.conditions:
        return "a durable wait needs at least one condition"
    if len(waiting.conditions) > MAX_CONDITIONS:
        return f"a durable wait may have at most {MAX_CONDITIONS} conditions"
    for i, cond in enumerate(waiting.conditions):
        if cond.kind is WaitKind.SLEEP:
            try:
                parse_time(cond.until or "")
            except ValueError:
                return f"condition {i}: a sleep needs 'until', an ISO-8601 time with a zone"
        elif not cond.event_key:
            return f"condition {i}: an event wait needs an 'event_key'"
        else:
            refused = filter_error(cond.expression)
            if refused is not None:
                return f"condition {i}: {refused}"
    return None


def wake_at(waiting: StepWaiting) -> dt.datetime | None:
    """When the wait's earliest sleep ends (None: it has no sleep)."""
    times = [
        parse_time(c.until) for c in waiting.conditions if c.kind is WaitKind.SLEEP and c.until
    ]
    return min(times) if times else None


class EventWaits:
    """The steps waiting for events, by scope (an index over the runs: a step found here
    may have been woken or ended since; ``woken_by_event`` drops those as it meets them)."""

    def __init__(self) -> None:
        self._by_scope: dict[Scope, dict[tuple[str, str], None]] = {}

    def add(self, scope: Scope, run_id: str, step: str) -> None:
        self._by_scope.setdefault(scope, {})[(run_id, step)] = None

    def drop(self, scope: Scope, run_id: str, step: str) -> None:
        waits = self._by_scope.get(scope)
        if waits is not None:
            waits.pop((run_id, step), None)
            if not waits:
                del self._by_scope[scope]

    def of(self, scope: Scope) -> list[tuple[str, str]]:
        return sorted(self._by_scope.get(scope, ()))

    def clear(self) -> None:
        self._by_scope.clear()
