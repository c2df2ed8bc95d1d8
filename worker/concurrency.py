"""Hatchet's ``ConcurrencyExpression``: at most ``max_runs`` runs of a workflow in flight
per value of a CEL expression over ``input`` and ``additional_metadata``
(:mod:`schemas.concurrency` says what each ``limit_strategy`` does)."""

from __future__ import annotations

import attrs

from schemas.concurrency import ConcurrencyDef, LimitStrategy, concurrency_problem
from schemas.errors import ConfigError

ConcurrencyLimitStrategy = LimitStrategy  # Hatchet's name


@attrs.frozen
class ConcurrencyExpression:
    expression: str
    max_runs: int = 1
    limit_strategy: LimitStrategy = LimitStrategy.GROUP_ROUND_ROBIN


def check_concurrency(value: ConcurrencyExpression | None) -> ConcurrencyDef | None:
    """The wire form of a workflow's concurrency; ConfigError (one line, with the position
    of a syntax error) for an expression that does not compile or a max_runs below 1."""
    if value is None:
        return None
    if not isinstance(value, ConcurrencyExpression):
        raise ConfigError(f"concurrency takes a ConcurrencyExpression, not {value!r}")
    try:
        spec = ConcurrencyDef(value.expression, value.max_runs, value.limit_strategy)
    except ValueError:
        raise ConfigError(
            f"concurrency limit_strategy {value.limit_strategy!r} is not one of "
            f"{', '.join(LimitStrategy)}"
        ) from None
    problem = concurrency_problem(spec)
    if problem is not None:
        raise ConfigError(problem)
    return spec


def check_step_concurrency(value: ConcurrencyExpression | None, step: str) -> ConcurrencyDef | None:
    """A step's concurrency (issue 15): as a workflow's, on that step's tasks; every
    ``limit_strategy`` (``dispatcher.flowgates`` says what each does to a step's tasks)."""
    try:
        return check_concurrency(value)
    except ConfigError as e:
        raise ConfigError(f"step {step!r}: {e}") from None
