"""Held steps: a ready step the dispatcher keeps back for a while (`docs/flow-control.md`).

Flow control (issue 15) decides, for each task a decision offers, whether it goes to the
workers now or waits: a rate limit with no room left, no live worker with the labels a step
requires, a sticky run's worker busy, another key's turn, a higher priority first. A step
kept back holds no worker slot: its task is not offered at all. The dispatcher records
why, once per reason and attempt, as ``runs.<id>.held``; the step stays ``QUEUED`` and its
``schedule_timeout`` still runs. Once the reason is gone, the task is offered as it would
have been (its own dedup id), with nothing more recorded.
"""

from __future__ import annotations

import enum

import attrs

from schemas.structure import utcnow


class HoldKind(enum.StrEnum):
    """What keeps a step back."""

    RATE_LIMIT = "RATE_LIMIT"  # a rate limit it uses has no room in its window
    LABELS = "LABELS"  # no live worker has the labels it requires
    STICKY = "STICKY"  # its run's sticky worker is gone or full (HARD)
    CONCURRENCY = "CONCURRENCY"  # its concurrency key is full
    PRIORITY = "PRIORITY"  # steps of higher priority go first


@attrs.frozen
class StepHeld:
    """``runs.<id>.held``: attempt ``attempt`` of the step is ready but kept back for
    ``kind``; ``reason`` is a sentence for a user (what it waits for). ``wakes``: how many
    durable wakes the task held carries (0 but for a durable step queued again). Appended
    by the dispatcher, once per (attempt, wakes, kind): dedup id
    ``<run>:<step>:<attempt>:held:<kind>`` (``:<wakes>`` appended when not 0)."""

    KIND = "held"
    run_id: str
    step: str
    attempt: int
    kind: HoldKind = attrs.field(converter=HoldKind)
    reason: str
    at: str = attrs.field(factory=utcnow)
    wakes: int = 0
    v: int = 1
    # The held task is a moved one (``Task.moves``, ``Task.moved_from``): dedup id
    # ``...:held:<kind>[:<wakes>]:moved:<moves>``.
    moves: int = 0
    moved_from: str | None = None
