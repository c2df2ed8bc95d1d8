"""Hatchet's rate limits: ``RateLimit`` on a step (``@hatchet.step(rate_limits=[...])``,
``@wf.task(rate_limits=[...])``) and ``hatchet.rate_limits.put(key, limit, duration)``
(:mod:`schemas.ratelimits` says how the dispatcher enforces them; docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from eventstore.ratelimits import put_rate_limit
from schemas.errors import ConfigError
from schemas.ratelimits import RateLimitDef, RateLimitDuration, rate_limit_problem
from worker.portal import Portal
from worker.settings import ClientSettings

__all__ = ["RateLimit", "RateLimitDuration", "RateLimitsClient", "check_rate_limits"]


@attrs.frozen
class RateLimit:
    """A limit a step takes ``units`` of per run: ``static_key`` (set with
    ``hatchet.rate_limits.put``), or ``dynamic_key``, a CEL expression over ``input`` and
    ``additional_metadata`` whose every value is a limit of ``limit`` units per
    ``duration``."""

    static_key: str | None = None
    dynamic_key: str | None = None
    units: int = 1
    limit: int | None = None
    duration: RateLimitDuration = RateLimitDuration.MINUTE


def check_rate_limits(value: Sequence[RateLimit] | None) -> tuple[RateLimitDef, ...]:
    """The wire form of a step's rate limits; ConfigError (one line) for one that cannot
    be used: neither or both keys, units below 1, a dynamic key without a limit or whose
    expression does not compile, a static key that is not a name."""
    if not value:
        return ()
    if isinstance(value, RateLimit) or not isinstance(value, Sequence):
        raise ConfigError(f"rate_limits takes a list of RateLimit, not {value!r}")
    out = []
    for item in value:
        if not isinstance(item, RateLimit):
            raise ConfigError(f"rate_limits takes RateLimit items, not {item!r}")
        try:
            d = RateLimitDef(
                item.static_key, item.dynamic_key, item.units, item.limit, item.duration
            )
        except ValueError:
            names = ", ".join(RateLimitDuration)
            raise ConfigError(
                f"rate limit duration {item.duration!r} is not one of {names}"
            ) from None
        problem = rate_limit_problem(d)
        if problem is not None:
            raise ConfigError(problem)
        out.append(d)
    return tuple(out)


class Hatchet(Protocol):
    """What this client uses of ``worker.client.Hatchet``."""

    @property
    def portal(self) -> Portal: ...
    @property
    def settings(self) -> ClientSettings: ...


class RateLimitsClient:
    """``hatchet.rate_limits``: ``put`` (and ``aio_put``)."""

    def __init__(self, hatchet: Hatchet) -> None:
        self._h = hatchet

    async def _put(self, key: str, limit: int, duration: RateLimitDuration | str) -> None:
        nc = await self._h.portal.nc()
        await put_rate_limit(nc, self._h.settings.scope, key, limit, duration)

    def put(
        self, key: str, limit: int, duration: RateLimitDuration | str = RateLimitDuration.SECOND
    ) -> None:
        """Set static rate limit ``key`` (of this client's namespace) to ``limit`` units
        per ``duration``, for every worker at once; steps using it that wait for room or
        for it to be defined go once there is room. ``RateLimitError`` (one line) for a
        bad key, limit or duration."""
        self._h.portal.call(self._put(key, limit, duration))

    async def aio_put(
        self, key: str, limit: int, duration: RateLimitDuration | str = RateLimitDuration.SECOND
    ) -> None:
        await self._h.portal.run(self._put(key, limit, duration))
