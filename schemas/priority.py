"""Priority (issue 15, Hatchet's names): 1 (low, the default), 2 (medium), 3 (high).

A run's priority is its trigger's (``priority=`` on a run request or an event push, or the
``Natchet-Priority`` header of an event published on NATS), else its workflow's
``default_priority``. Among the ready steps of one workflow that wait for a worker, higher
priorities are offered first (:mod:`dispatcher.priority`). Pure.
"""

from __future__ import annotations

from typing import Any

LOW, MEDIUM, HIGH = 1, 2, 3
HEADER = "Natchet-Priority"


def priority_problem(value: Any, what: str = "priority") -> str | None:
    """Why ``value`` is not a priority (one line), or None (None itself is fine: unset)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not LOW <= value <= HIGH:
        return f"{what} must be 1 (low), 2 (medium) or 3 (high), not {value!r}"
    return None


def header_priority(text: str | None) -> tuple[int | None, str | None]:
    """The priority a ``Natchet-Priority`` header gives: (value, None), (None, None) without
    the header, or (None, why) for a bad one."""
    if text is None:
        return None, None
    stripped = text.strip()
    if stripped in ("1", "2", "3"):
        return int(stripped), None
    return None, f"{HEADER} header must be 1, 2 or 3, not {text[:20]!r}"


def effective(value: int | None) -> int:
    """The priority a run without one has: low."""
    return LOW if value is None else value
