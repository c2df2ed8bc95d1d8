"""Rate limits: how many units of something the steps using it may take per window of time
(issue 15; Hatchet's ``RateLimit``; `docs/flow-control.md`).

A step declares the limits it uses (``StepDef.rate_limits``), each with the ``units`` one
run of it takes:

- **static**: ``static_key`` names a limit set for the tenant's namespace with
  ``hatchet.rate_limits.put(key, limit, duration)``, recorded as ``ratelimits.<key>``
  (:class:`RateLimitSet`, the latest wins);
- **dynamic**: ``dynamic_key`` is a CEL expression over ``input`` and
  ``additional_metadata`` (as concurrency keys): each value is a limit of its own, of
  ``limit`` units per ``duration``, declared with the step.

The dispatcher enforces them for all workers at once, over a sliding window: the units of
the tasks it offered in any window of ``duration`` never exceed ``limit``. A task offered
records what it took (``Task.rate_limits``: :class:`RateLimitUse`), so a restart rebuilds
the windows from the log. Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from schemas.concurrency import expression_key
from schemas.filters import filter_error
from schemas.structure import structure, utcnow
from schemas.subjects import NAME_RE

WHAT = "rate limit dynamic_key"


class RateLimitDuration(enum.StrEnum):
    """Hatchet's window lengths."""

    SECOND = "SECOND"
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"  # 30 days
    YEAR = "YEAR"  # 365 days


SECONDS: dict[RateLimitDuration, float] = {
    RateLimitDuration.SECOND: 1.0,
    RateLimitDuration.MINUTE: 60.0,
    RateLimitDuration.HOUR: 3600.0,
    RateLimitDuration.DAY: 86400.0,
    RateLimitDuration.WEEK: 7 * 86400.0,
    RateLimitDuration.MONTH: 30 * 86400.0,
    RateLimitDuration.YEAR: 365 * 86400.0,
}
ONE = {
    RateLimitDuration.SECOND: "1s",
    RateLimitDuration.MINUTE: "1m",
    RateLimitDuration.HOUR: "1h",
    RateLimitDuration.DAY: "1 day",
    RateLimitDuration.WEEK: "1 week",
    RateLimitDuration.MONTH: "30 days",
    RateLimitDuration.YEAR: "365 days",
}


@attrs.frozen
class RateLimitDef:
    """One limit a step uses: ``static_key`` (set with ``rate_limits.put``) or
    ``dynamic_key`` (a CEL expression; its own ``limit`` per ``duration``), and the
    ``units`` a run of the step takes."""

    static_key: str | None = None
    dynamic_key: str | None = None
    units: int = 1
    limit: int | None = None
    duration: RateLimitDuration = attrs.field(
        default=RateLimitDuration.MINUTE, converter=RateLimitDuration
    )


def rate_limit_defs(
    value: Iterable[RateLimitDef | Mapping[str, Any]] | None,
) -> tuple[RateLimitDef, ...]:
    """A step's rate limits (converter)."""
    if not value:
        return ()
    return tuple(v if isinstance(v, RateLimitDef) else structure(RateLimitDef, v) for v in value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot name a static rate limit (it is a subject token), or None."""
    if not isinstance(key, str) or not NAME_RE.match(key):
        return f"rate limit key {key!r}: use 1-64 of A-Z, a-z, 0-9, '_' or '-'"
    return None


def rate_limit_problem(d: RateLimitDef) -> str | None:
    """Why a step's rate limit cannot be used (one line), or None."""
    if (d.static_key is None) == (d.dynamic_key is None):
        return "a rate limit takes a static_key or a dynamic_key (exactly one)"
    if not _whole(d.units) or d.units < 1:
        return f"rate limit units must be a whole number >= 1, not {d.units!r}"
    if d.static_key is not None:
        if d.limit is not None:
            return (
                f"rate limit {d.static_key!r}: a static key's limit is set with "
                "hatchet.rate_limits.put(key, limit, duration), not on the step"
            )
        return key_problem(d.static_key)
    if d.limit is None:
        return f"dynamic rate limit {d.dynamic_key!r} needs a limit (and a duration)"
    if not _whole(d.limit) or d.limit < 1:
        return f"rate limit limit must be a whole number >= 1, not {d.limit!r}"
    return filter_error(d.dynamic_key, WHAT)


def dynamic_key(
    d: RateLimitDef, payload: Any, metadata: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The key a dynamic rate limit gives a run: (key, None) or (None, why). Never raises."""
    assert d.dynamic_key is not None
    return expression_key(d.dynamic_key, WHAT, payload, metadata)


@attrs.frozen
class RateLimitSet:
    """``<t>.<ns>.ratelimits.<key>``: the static rate limit ``key`` allows ``limit`` units
    per ``duration`` (the latest record of a key wins). Appended by a client
    (``hatchet.rate_limits.put``, ``natchet ratelimits put``)."""

    KIND = "ratelimit"
    key: str
    limit: int
    duration: RateLimitDuration = attrs.field(converter=RateLimitDuration)
    at: str = attrs.field(factory=utcnow)
    v: int = 1


def set_problem(m: RateLimitSet) -> str | None:
    """Why a ``ratelimits.<key>`` record cannot be used, or None."""
    if not _whole(m.limit) or m.limit < 1:
        return f"rate limit {m.key!r}: limit must be a whole number >= 1, not {m.limit!r}"
    return key_problem(m.key)


@attrs.frozen
class RateLimitUse:
    """What an offered task took of a limit: ``units`` of ``key`` at ``at``, whose window
    was ``window_s`` seconds then (so the windows can be rebuilt, and pruned, from the
    log). In the task (``Task.rate_limits``)."""

    key: str
    units: int
    at: str
    window_s: float


def rate_limit_uses(value: Iterable[RateLimitUse | Mapping[str, Any]]) -> tuple[RateLimitUse, ...]:
    """A task's rate-limit uses (converter)."""
    return tuple(v if isinstance(v, RateLimitUse) else structure(RateLimitUse, v) for v in value)
