"""Worker labels, desired labels and sticky runs in the SDK (issue 15; the rules are in
:mod:`schemas.labels` and ``docs/flow-control.md``).

``hatchet.worker(name, slots, labels={"gpu": "a100", "memory": 64})`` sets a worker's
labels; a step asks for them with ``desired_worker_labels={"gpu": DesiredWorkerLabel(
"a100", required=True)}``; ``ctx.worker.upsert_labels({...})`` changes them while the
worker runs, and the worker says so in a heartbeat at once. Everything is checked when it
is declared: a bad label is a one-line ``ConfigError``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

from schemas.errors import ConfigError
from schemas.labels import (
    DesiredWorkerLabel,
    LabelValue,
    StickyStrategy,
    WorkerLabelComparator,
    desired_labels,
    labels_problem,
)
from schemas.messages import WorkflowDef

__all__ = [
    "DesiredWorkerLabel",
    "StickyStrategy",
    "WorkerContext",
    "WorkerLabelComparator",
    "check_desired",
    "check_labels",
    "check_sticky",
    "placed",
]


def check_labels(labels: Mapping[str, LabelValue] | None) -> dict[str, LabelValue]:
    """A worker's labels, or ConfigError saying what is wrong with them."""
    if labels is None:
        return {}
    problem = labels_problem(labels)
    if problem is not None:
        raise ConfigError(f"worker labels: {problem}")
    return dict(labels)


def check_desired(
    value: Mapping[str, DesiredWorkerLabel | Mapping[str, Any]] | None, where: str
) -> dict[str, DesiredWorkerLabel]:
    """A step's desired labels (``DesiredWorkerLabel``s, or their fields as dicts), or
    ConfigError naming the step."""
    try:
        return desired_labels(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: desired_worker_labels: {exc}") from None


def check_sticky(value: StickyStrategy | str | None) -> StickyStrategy | None:
    if value is None:
        return None
    try:
        return StickyStrategy(value)
    except ValueError:
        raise ConfigError(
            f"sticky must be one of {', '.join(StickyStrategy)}, not {value!r}"
        ) from None


def placed(definition: WorkflowDef) -> bool:
    """Whether the engine places any step of ``definition`` on a chosen worker (a step with
    desired labels, or a sticky workflow): only workers with such a step take directed
    tasks."""
    if definition.sticky is not None:
        return True
    steps = [*definition.steps, definition.on_failure, definition.on_success]
    return any(s is not None and s.desired_worker_labels for s in steps)


class WorkerContext:
    """``ctx.worker``: the worker a step runs on. Safe from sync steps (threads)."""

    def __init__(self, worker_id: str, labels: Mapping[str, LabelValue]) -> None:
        self._id = worker_id
        self._labels = dict(labels)
        self._lock = threading.Lock()
        self._changed: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def id(self) -> str:
        return self._id

    def labels(self) -> dict[str, LabelValue]:
        with self._lock:
            return dict(self._labels)

    def upsert_labels(self, labels: Mapping[str, LabelValue]) -> None:
        """Add or change labels of this worker; the engine hears them in a heartbeat sent at
        once (steps placed by label can then come here)."""
        with self._lock:
            merged = {**self._labels, **labels}
            problem = labels_problem(merged)
            if problem is not None:
                raise ConfigError(f"worker labels: {problem}")
            self._labels = merged
        if self._changed is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed)

    def on_change(self, changed: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        """Call ``changed`` in ``loop`` whenever the labels change (the heartbeat)."""
        self._changed, self._loop = changed, loop
