"""Pure timing policies: they compute delays and deadlines, and never sleep."""

from __future__ import annotations

import datetime as dt

from schemas.messages import StepDef


def backoff_s(step: StepDef, failed_attempt: int) -> float:
    """Delay before the attempt after ``failed_attempt``: min(max, factor ** attempt) seconds,
    or 0 (immediate) when the step sets no backoff factor."""
    if not step.backoff_factor:
        return 0.0
    delay = float(step.backoff_factor) ** failed_attempt
    if step.backoff_max_s is not None:
        delay = min(delay, step.backoff_max_s)
    return max(delay, 0.0)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def after(moment: dt.datetime, seconds: float) -> dt.datetime:
    return moment + dt.timedelta(seconds=seconds)
