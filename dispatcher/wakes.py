"""Which durable waits end now: a sleep come due, an event that matches (the decisions
in :mod:`dispatcher.decide` append the wake and queue the step again). Pure, no clocks:
``now`` is given."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from dispatcher.matching import key_matches
from dispatcher.policy import iso, parse_time
from dispatcher.state import RunState, State, StepState
from dispatcher.waits import wake_at
from schemas.durable import StepWoken, WaitKind
from schemas.filters import evaluate
from schemas.subjects import Scope


def woken_by_time(
    run: RunState, step: StepState, now: dt.datetime
) -> tuple[dt.datetime, StepWoken] | None:
    """The step's wait, if its earliest sleep has ended by ``now``: when it ended, and the
    wake (its first sleep of that time)."""
    waiting = step.waiting
    if waiting is None or step.terminal or run.failed_error:
        return None
    when = wake_at(waiting)
    if when is None or when > now:
        return None
    condition = next(
        i
        for i, c in enumerate(waiting.conditions)
        if c.kind is WaitKind.SLEEP and c.until and parse_time(c.until) == when
    )
    woken = StepWoken(
        run.run_id, step.spec.name, waiting.attempt, waiting.index, condition, WaitKind.SLEEP,
        at=iso(now),
    )  # fmt: skip
    return when, woken


def woken_by_event(
    state: State,
    scope: Scope,
    event: tuple[str, int, Any, Mapping[str, str]],
    now: dt.datetime,
) -> list[tuple[RunState, StepState, StepWoken]]:
    """Every wait of the scope that the event (key, stream sequence, payload, metadata)
    ends: its first event condition whose key matches and whose expression (if any) is
    true of the event. In run and step order."""
    key, seq, payload, metadata = event
    out = []
    for run_id, name in state.event_waits.of(scope):
        run = state.run(scope, run_id)
        step = None if run is None else run.steps.get(name)
        waiting = None if step is None else step.waiting
        if run is None or step is None or waiting is None or run.failed_error:
            state.event_waits.drop(scope, run_id, name)  # stale: woken, or over
            continue
        if seq <= step.waiting_seq:
            continue  # an event older than the wait (delivered again after a restart)
        for i, cond in enumerate(waiting.conditions):
            if cond.kind is not WaitKind.EVENT or not key_matches(cond.event_key or "", key):
                continue
            if (
                cond.expression is not None
                and not evaluate(cond.expression, payload, metadata, key).matched
            ):
                continue
            woken = StepWoken(
                run_id, name, waiting.attempt, waiting.index, i, WaitKind.EVENT,
                event_key=key, event_id=str(seq), payload=payload,
                at=iso(now),
            )  # fmt: skip
            out.append((run, step, woken))
            break
    return out
