"""Setting a static rate limit (``hatchet.rate_limits.put``, ``natchet ratelimits put``):
append ``<t>.<ns>.ratelimits.<key>`` (:class:`schemas.ratelimits.RateLimitSet`); the
dispatcher folds it, the latest of a key wins. Reading back the limits set."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS

from eventstore.append import Append, append
from eventstore.read import direct_last_per_subject
from schemas.codec import DecodeError, decode_subject, encode
from schemas.errors import ConfigError
from schemas.ratelimits import RateLimitDuration, RateLimitSet, set_problem
from schemas.subjects import Scope, SubjectError, parse


class RateLimitError(ConfigError):
    """A rate limit that cannot be set (a bad key, limit or duration)."""


def rate_limit_set(key: str, limit: int, duration: RateLimitDuration | str) -> RateLimitSet:
    """The record, checked: ``RateLimitError`` (one line) for a bad key, limit or duration."""
    try:
        m = RateLimitSet(key, limit, RateLimitDuration(str(duration).upper()))
    except ValueError:
        names = ", ".join(RateLimitDuration)
        raise RateLimitError(f"rate limit duration {duration!r} is not one of {names}") from None
    problem = set_problem(m)
    if problem is not None:
        raise RateLimitError(problem)
    return m


async def put_rate_limit(
    nc: NATS, scope: Scope, key: str, limit: int, duration: RateLimitDuration | str
) -> RateLimitSet:
    """Set static rate limit ``key`` of ``scope`` to ``limit`` units per ``duration``."""
    m = rate_limit_set(key, limit, duration)
    subject = scope.ratelimit(key)
    await append(nc, Append(subject, encode(m), f"{subject}:{uuid.uuid4()}"))
    return m


async def list_rate_limits(nc: NATS, scope: Scope) -> list[RateLimitSet]:
    """The static rate limits of ``scope``, each as last set, by key."""
    out: list[RateLimitSet] = []
    for rec in await direct_last_per_subject(nc, scope.tenant, f"{scope.prefix}.ratelimits.*"):
        try:
            m = decode_subject(parse(rec.subject), rec.data)
        except (SubjectError, DecodeError):
            continue
        if isinstance(m, RateLimitSet) and set_problem(m) is None:
            out.append(m)
    return sorted(out, key=lambda m: m.key)
