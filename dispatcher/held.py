"""The tasks the dispatcher holds back (:mod:`dispatcher.holds`), in memory: an index,
not state. The log holds only each step's ``held`` record; after a restart ``complete``
makes the held tasks again from it, and they go through the gates again.

Held tasks are kept per run and step (a step has one task at a time), each with its place
in line: they are retried by priority (higher first), then in the order they were first
held (so also within each (scope, workflow)). ``dirty`` says something a gate reads changed (a rate
limit set, a worker's labels): retry them all at the next pass; ``recheck_at`` is the
earliest time a gate said to look again.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import attrs

from schemas.holds import HoldKind
from schemas.subjects import Scope

HeldKey = tuple[str, str]  # (run id, step)


@attrs.define
class HeldTask:
    """A task kept back: its output as decided (subject, message, dedup id), why, and
    when to look again (None: when something changes)."""

    scope: Scope
    output: Any  # dispatcher.decide.Output (not imported: decide imports state)
    kind: HoldKind
    reason: str
    recheck_at: dt.datetime | None
    priority: int = 1  # a run without one is of priority 1 (low), the default
    order: int = 0

    @property
    def line(self) -> tuple[int, int]:
        """Its place: priority (desc), then first held. One line for every workflow: tasks
        of several workflows waiting for one rate limit take turns in the order they came
        (a line per workflow, tried workflow after workflow, would let one starve another);
        within a (scope, workflow), the same order."""
        return (-self.priority, self.order)


@attrs.define
class Holds:
    tasks: dict[HeldKey, HeldTask] = attrs.Factory(dict)
    dirty: bool = False
    # The earliest ``recheck_at`` of the tasks held (perhaps of one since dropped: a pass
    # then finds nothing to do, and sets it again).
    next_check: dt.datetime | None = None
    _by_run: dict[str, set[str]] = attrs.Factory(dict)
    _counter: itertools.count[int] = attrs.Factory(itertools.count)

    def keep(self, key: HeldKey, held: HeldTask) -> None:
        """Hold (or hold again, keeping its place) the task of ``key``."""
        old = self.tasks.get(key)
        held.order = next(self._counter) if old is None else old.order
        self.tasks[key] = held
        self._by_run.setdefault(key[0], set()).add(key[1])
        when = held.recheck_at
        if when is not None and (self.next_check is None or when < self.next_check):
            self.next_check = when

    def drop(self, run_id: str, step: str | None = None) -> None:
        """Forget the held task of the step (``step`` None: of every step of the run)."""
        steps = self._by_run.get(run_id)
        if not steps:
            return
        for name in list(steps) if step is None else [step]:
            self.tasks.pop((run_id, name), None)
            steps.discard(name)
        if not steps:
            del self._by_run[run_id]

    def due(self, now: dt.datetime) -> bool:
        """Whether a pass should retry the held tasks now."""
        if not self.tasks:
            return False
        return self.dirty or (self.next_check is not None and self.next_check <= now)

    def in_line(self) -> list[tuple[HeldKey, HeldTask]]:
        return sorted(self.tasks.items(), key=lambda kv: kv[1].line)

    def rechecked(self) -> None:
        """After a pass: nothing dirty, the next check the earliest of those held."""
        self.dirty = False
        times = [h.recheck_at for h in self.tasks.values() if h.recheck_at is not None]
        self.next_check = min(times, default=None)

    def clear(self) -> None:
        self.tasks.clear()
        self._by_run.clear()
        self.dirty = False
        self.next_check = None
