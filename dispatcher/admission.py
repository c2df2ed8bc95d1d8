"""Admissions: which runs waiting for their concurrency key start now, and which runs the
key's strategy cancels (:mod:`schemas.concurrency`). Pure: decisions over the folded state.

Asked after every decision is folded (``dispatcher.step``), and by ``complete`` after a
restart, it looks at the groups whose runs changed since it last looked (``Groups.dirty``):

- ``GROUP_ROUND_ROBIN``: the oldest waiting runs are admitted while fewer than
  ``max_runs`` are in flight.
- ``CANCEL_IN_PROGRESS``: every waiting run is admitted (the newest ``max_runs`` of them,
  if more wait), and the oldest runs in flight are cancelled to make room.
- ``CANCEL_NEWEST``: waiting runs are admitted while there is room; the others are
  cancelled.

A run is admitted by offering its ready steps (its first tasks); a run is cancelled by its
recorded end, as a cancel request would (its children with it). Each is its own decision,
with the dedup ids those outputs always have, so deciding one twice appends nothing new.
"""

from __future__ import annotations

import datetime as dt

from dispatcher.decide import Output, cancel_run, offer_ready
from dispatcher.groups import Group, GroupId
from dispatcher.state import State
from schemas.concurrency import LimitStrategy


def admissions(state: State, now: dt.datetime) -> list[list[Output]]:
    """The admissions and cancellations the changed groups call for, one decision per
    run, groups in order (scope, workflow, key), runs oldest first."""
    if not state.groups.dirty:
        return []  # the usual case, after every decision: no key's runs changed
    if not state.partition.coordinator:
        state.groups.dirty = set()  # runs with a key are partition 0's (dispatcher.partition)
        return []
    dirty, state.groups.dirty = state.groups.dirty, set()
    decisions: list[list[Output]] = []
    for gid in sorted(dirty, key=lambda g: (g[0].tenant, g[0].namespace, g[1], g[2])):
        group = state.groups.groups.get(gid)
        if group is not None and group.waiting:
            decisions += _decide_group(state, gid, group, now)
    return decisions


def _decide_group(state: State, gid: GroupId, group: Group, now: dt.datetime) -> list[list[Output]]:
    runs = [state.runs[r] for r in group.waiting if r in state.runs]
    in_flight = [state.runs[r] for r in group.admitted if r in state.runs]
    if not runs:
        return []
    spec = runs[0].concurrency
    assert spec is not None
    room = spec.max_runs - len(in_flight)
    key = gid[2]
    match spec.limit_strategy:
        case LimitStrategy.GROUP_ROUND_ROBIN:
            return [offer_ready(run, now) for run in runs[: max(room, 0)]]
        case LimitStrategy.CANCEL_IN_PROGRESS:
            admit = runs[-spec.max_runs :]
            too_many = len(in_flight) + len(admit) - spec.max_runs
            why = f"cancelled: a newer run of concurrency key {key!r} took its place"
            out = [cancel_run(state, run, why, now) for run in in_flight[: max(too_many, 0)]]
            out += [cancel_run(state, run, why, now) for run in runs[: len(runs) - len(admit)]]
            return out + [offer_ready(run, now) for run in admit]
        case LimitStrategy.CANCEL_NEWEST:
            admit = runs[: max(room, 0)]
            why = (
                f"cancelled: concurrency key {key!r} already has {spec.max_runs} "
                "run(s) in flight (CANCEL_NEWEST)"
            )
            out = [offer_ready(run, now) for run in admit]
            return out + [cancel_run(state, run, why, now) for run in runs[len(admit) :]]
    return []
