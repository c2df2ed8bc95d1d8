"""Worker labels and sticky runs (issue 15): what a worker says about itself, e.g.
``{"gpu": "a100", "memory": 64}``, sent in every heartbeat (``WorkerHeartbeat.labels``), and
what a step wants of the worker it runs on (``StepDef.desired_worker_labels``, Hatchet's
``DesiredWorkerLabel``: a value, whether it is ``required``, a ``weight`` when it is not, and
a ``comparator``, the worker's value on the left: ``memory GREATER_THAN_OR_EQUAL 64`` wants
a worker whose ``memory`` is at least 64). A workflow's ``sticky`` keeps a run's steps on
the worker that ran its first step: ``SOFT`` when that worker can take them, ``HARD`` always.

A label's key is a non-empty string of at most ``MAX_KEY_CHARS``; its value a string (at
most ``MAX_VALUE_CHARS``) or a whole number (not a boolean: JSON would keep it, but Hatchet's
labels are strings or integers, and ``True == 1`` would compare oddly). A worker has at most
``MAX_LABELS``. Pure.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs

MAX_LABELS = 64
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 256

LabelValue = str | int


def label_problem(key: Any, value: Any) -> str | None:
    """Why ``key: value`` cannot be a label (one line), or None."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        return f"a label key must be a string of 1 to {MAX_KEY_CHARS} characters, not {key!r}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"label {key!r} must be a string or a whole number, not {value!r}"
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return f"label {key!r} is longer than {MAX_VALUE_CHARS} characters"
    return None


def labels_problem(labels: Any) -> str | None:
    """Why ``labels`` cannot be a worker's labels (one line), or None."""
    if not isinstance(labels, Mapping):
        return f"labels must be a mapping of names to strings or numbers, not {labels!r}"
    if len(labels) > MAX_LABELS:
        return f"a worker has at most {MAX_LABELS} labels, not {len(labels)}"
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem is not None:
            return problem
    return None


def label_map(value: Mapping[str, LabelValue] | None) -> dict[str, LabelValue]:
    """A converter: the labels as a dict (TypeError, which the codec turns into a refused
    body, when they are malformed)."""
    if value is None:
        return {}
    problem = labels_problem(value)
    if problem is not None:
        raise TypeError(problem)
    return dict(value)


class WorkerLabelComparator(enum.StrEnum):
    """How a worker's label compares with a desired value (the worker's on the left)."""

    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    GREATER_THAN = "GREATER_THAN"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"
    LESS_THAN = "LESS_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"


class StickyStrategy(enum.StrEnum):
    """``SOFT``: a run's steps prefer the worker of its first step, and go elsewhere when it
    is gone or full. ``HARD``: they run there or nowhere (waiting until it has room, or
    until the run's schedule timeout if it has gone)."""

    SOFT = "SOFT"
    HARD = "HARD"


_ORDER: dict[WorkerLabelComparator, Callable[[int, int], bool]] = {
    WorkerLabelComparator.GREATER_THAN: operator.gt,
    WorkerLabelComparator.GREATER_THAN_OR_EQUAL: operator.ge,
    WorkerLabelComparator.LESS_THAN: operator.lt,
    WorkerLabelComparator.LESS_THAN_OR_EQUAL: operator.le,
}
_SYMBOLS = {
    WorkerLabelComparator.EQUAL: "==",
    WorkerLabelComparator.NOT_EQUAL: "!=",
    WorkerLabelComparator.GREATER_THAN: ">",
    WorkerLabelComparator.GREATER_THAN_OR_EQUAL: ">=",
    WorkerLabelComparator.LESS_THAN: "<",
    WorkerLabelComparator.LESS_THAN_OR_EQUAL: "<=",
}


def _label_value(value: LabelValue) -> LabelValue:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(
            f"a desired label's value must be a string or a whole number, not {value!r}"
        )
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise TypeError(f"a desired label's value is longer than {MAX_VALUE_CHARS} characters")
    return value


def _weight(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"a desired label's weight must be a whole number >= 0, not {value!r}")
    return value


@attrs.frozen
class DesiredWorkerLabel:
    """What a step wants of one label of its worker. ``required``: only workers whose label
    satisfies it may run the step; otherwise it is a preference worth ``weight``."""

    value: LabelValue = attrs.field(converter=_label_value)
    required: bool = False
    weight: int = attrs.field(default=100, converter=_weight)
    comparator: WorkerLabelComparator = attrs.field(
        default=WorkerLabelComparator.EQUAL, converter=WorkerLabelComparator
    )

    def satisfied_by(self, have: LabelValue | None) -> bool:
        """Whether a worker whose label is ``have`` (None: it has no such label) satisfies
        it. Order comparators compare whole numbers only; a missing label satisfies
        nothing, ``NOT_EQUAL`` included."""
        if have is None:
            return False
        if self.comparator is WorkerLabelComparator.EQUAL:
            return type(have) is type(self.value) and have == self.value
        if self.comparator is WorkerLabelComparator.NOT_EQUAL:
            return type(have) is not type(self.value) or have != self.value
        if isinstance(have, str) or isinstance(self.value, str):
            return False
        return _ORDER[self.comparator](have, self.value)

    def describe(self, key: str) -> str:
        """E.g. ``gpu == 'a100' (required)`` or ``memory >= 64 (weight 50)``."""
        how = "required" if self.required else f"weight {self.weight}"
        return f"{key} {_SYMBOLS[self.comparator]} {self.value!r} ({how})"


def desired_labels(
    value: Mapping[str, DesiredWorkerLabel | Mapping[str, Any]] | None,
) -> dict[str, DesiredWorkerLabel]:
    """A converter: a step's desired labels, each a :class:`DesiredWorkerLabel` (or its
    JSON object); TypeError when malformed (the codec refuses the body)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_LABELS:
        raise TypeError(f"desired_worker_labels must be a mapping of at most {MAX_LABELS} labels")
    out: dict[str, DesiredWorkerLabel] = {}
    for key, want in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise TypeError(
                f"a desired label key must be a string of 1 to {MAX_KEY_CHARS} characters"
            )
        if isinstance(want, DesiredWorkerLabel):
            out[key] = want
        elif isinstance(want, Mapping):
            known = {f.name for f in attrs.fields(DesiredWorkerLabel)}
            out[key] = DesiredWorkerLabel(**{k: v for k, v in want.items() if k in known})
        else:
            raise TypeError(f"desired label {key!r} must be a DesiredWorkerLabel, not {want!r}")
    return out


def opt_sticky(value: StickyStrategy | str | None) -> StickyStrategy | None:
    return None if value is None else StickyStrategy(value)
