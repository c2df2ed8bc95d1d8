"""Worker labels (issue 15): what a worker says about itself, e.g. ``{"gpu": "a100",
"memory": 64}``, sent in every heartbeat (``WorkerHeartbeat.labels``) and matched against a
step's desired labels when the engine places the step.

A label's key is a non-empty string of at most ``MAX_KEY_CHARS``; its value a string (at
most ``MAX_VALUE_CHARS``) or a whole number (not a boolean: JSON would keep it, but Hatchet's
labels are strings or integers, and ``True == 1`` would compare oddly). A worker has at most
``MAX_LABELS``. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
