"""Concurrency keys: at most ``max_runs`` runs of a workflow in flight per key (issue 15).

A workflow's ``concurrency`` is a CEL expression over ``input`` and ``additional_metadata``
(as Hatchet's ``ConcurrencyExpression``); its value, as a string, is a run's key, fixed
when the run is created (``RunCreated.concurrency_key``). A run is *admitted* once its
first task is offered; until then it waits, ``QUEUED``. What happens to a run whose key is
full is the ``limit_strategy``:

- ``GROUP_ROUND_ROBIN``: it waits its turn; runs of a key are admitted oldest first as
  runs of the key end, and keys that get room in the same decision take turns.
- ``CANCEL_IN_PROGRESS``: it is admitted, and the oldest runs of the key in flight are
  cancelled to make room.
- ``CANCEL_NEWEST``: it is cancelled.

Pure (the expression is compiled and evaluated by :mod:`schemas.filters`' CEL).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from schemas.filters import compile_filter, filter_error

WHAT = "concurrency expression"
MAX_KEY_CHARS = 256


class LimitStrategy(enum.StrEnum):
    GROUP_ROUND_ROBIN = "GROUP_ROUND_ROBIN"
    CANCEL_IN_PROGRESS = "CANCEL_IN_PROGRESS"
    CANCEL_NEWEST = "CANCEL_NEWEST"


@attrs.frozen
class ConcurrencyDef:
    """At most ``max_runs`` runs in flight per value of ``expression``."""

    expression: str
    max_runs: int = 1
    limit_strategy: LimitStrategy = attrs.field(
        default=LimitStrategy.GROUP_ROUND_ROBIN, converter=LimitStrategy
    )


def concurrency_problem(spec: ConcurrencyDef | None) -> str | None:
    """Why a workflow's concurrency cannot be used (one line), or None."""
    if spec is None:
        return None
    if not isinstance(spec.max_runs, int) or isinstance(spec.max_runs, bool) or spec.max_runs < 1:
        return f"concurrency max_runs must be a whole number >= 1, not {spec.max_runs!r}"
    return filter_error(spec.expression, WHAT)


def concurrency_key(
    spec: ConcurrencyDef, payload: Any, metadata: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """(the run's key, None), or (None, why the expression gave no key): an evaluation
    error, or a value that is not a string, a number or a boolean. Never raises."""
    return expression_key(spec.expression, WHAT, payload, metadata)


def expression_key(
    expression: str, what: str, payload: Any, metadata: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """A key from a CEL expression over ``input`` and ``additional_metadata`` (``what``
    names it in the reason): (key, None), or (None, why not: an evaluation error, or a
    value that is not a string, a number or a boolean). Never raises."""
    from celpy.adapter import json_to_cel  # celpy loads with the first expression (filters)

    try:
        program = compile_filter(expression, what)
        value = program.evaluate(
            {"input": json_to_cel(payload), "additional_metadata": json_to_cel(dict(metadata))}
        )
    except Exception as exc:  # CELEvalError, or anything a hostile payload provokes
        return None, f"{what} {expression!r} failed: {_one_line(exc)}"
    if isinstance(value, Exception):
        return None, f"{what} {expression!r} failed: {_one_line(value)}"
    if isinstance(value, bool):
        key = "true" if value else "false"
    elif isinstance(value, int | float | str):
        key = str(value)
    else:
        kind = type(value).__name__
        return None, f"{what} {expression!r} gave a {kind}, not a string or number"
    if len(key) > MAX_KEY_CHARS:
        return None, f"{what} {expression!r} gave a key longer than {MAX_KEY_CHARS}"
    return key, None


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return " ".join(text.split())[:300]
