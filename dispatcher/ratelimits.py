"""The rate-limit gate (:mod:`dispatcher.holds`; :mod:`schemas.ratelimits`). Pure.

A task of a step with rate limits goes only if every limit it uses has room for its units
in the window ending now; it then records what it took (``Task.rate_limits``), which the
fold adds to the windows. Otherwise:

- a limit with no room: held (``RATE_LIMIT``) until the oldest units it needs leave the
  window (``recheck_at``);
- a static key never set (``ratelimits.<key>``): held, with no recheck, until one is set;
- a step whose units exceed the limit, or whose dynamic key cannot be evaluated: fails
  for good (it could never run).
"""

from __future__ import annotations

import datetime as dt

import attrs

from dispatcher.holds import Fail, Go, Hold, Verdict
from dispatcher.policy import iso
from dispatcher.state import RunState, State, StepState
from schemas.holds import HoldKind
from schemas.messages import Task
from schemas.ratelimits import ONE, SECONDS, RateLimitDuration, RateLimitUse, dynamic_key


def rate_limit_gate(
    state: State, run: RunState, step: StepState, task: Task, now: dt.datetime
) -> Verdict:
    defs = step.spec.rate_limits
    if not defs:
        return Go()
    wanted: dict[str, tuple[int, RateLimitDuration, int]] = {}  # key: limit, per, units
    for d in defs:
        key: str
        if d.static_key is not None:
            key = d.static_key
            current = state.rate_limits.get((run.scope, key))
            if current is None:
                undefined = (
                    f"rate limit {key!r} is not defined: hatchet.rate_limits.put({key!r}, "
                    "limit, duration) (or natchet ratelimits put) sets it"
                )
                return Hold(HoldKind.RATE_LIMIT, undefined, None)
            limit, duration = current.limit, current.duration
        else:
            found, why = dynamic_key(d, run.input, run.metadata)
            if found is None:
                return Fail(f"rate limit: {why}")
            key, limit, duration = str(found), d.limit or 0, d.duration
        # A key used twice by the step: its units add up, under its first limit.
        first = wanted.get(key)
        wanted[key] = (
            (limit, duration, d.units) if first is None else (*first[:2], first[2] + d.units)
        )
    uses: list[RateLimitUse] = []
    full: list[tuple[str, int, str, dt.datetime]] = []  # key, limit, per, room at
    for key, (limit, duration, units) in wanted.items():
        per = ONE[duration]
        if units > limit:
            return Fail(
                f"rate limit {key!r} allows {limit} units per {per}; step "
                f"{step.spec.name!r} takes {units}: it can never run"
            )
        window_s = SECONDS[duration]
        room = state.windows.room_at((run.scope, key), units, limit, window_s, now)
        if room is not None:
            full.append((key, limit, per, room))
        else:
            uses.append(RateLimitUse(key, units, iso(now), window_s))
    if full:
        key, limit, per, _room = full[0]
        recheck = max(f[3] for f in full)
        why = f"rate limit {key!r} allows {limit} units per {per}; next room at {iso(recheck)}"
        return Hold(HoldKind.RATE_LIMIT, why, recheck)
    return Go(task=attrs.evolve(task, rate_limits=tuple(uses)))
