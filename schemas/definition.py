"""A workflow definition's version: what every worker of a workflow must agree on.

A task names the version of the definition its run follows, and a worker hands back a task
of a version it does not have (:mod:`worker.intake`). Workers in other languages register
the same workflows (``docs/protocol.md``), so the version is a hash anyone can compute: the
first 16 hex digits of the SHA-256 of the RFC 8785 canonical JSON (JCS) of the definition
without ``version``, ``registered_at`` and ``v``, its steps sorted by name and each step's
parents sorted (so the order in which a worker declares them does not matter). JCS writes
numbers as JavaScript does (``60.0`` is ``60``) and sorts keys, so Python and Node hash the
same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

# The fields of a ``workflow`` message the version covers (the rest describe the message).
VERSIONED = (
    "name",
    "steps",
    "on_events",
    "schedule_timeout_s",
    "on_failure",
    "on_success",
    "event_filter",
    "concurrency",
    "sticky",
    "default_priority",
)
# Fields added after the first definitions: hashed only when set (not null), so a definition
# without them keeps the version it always had.
HASHED_WHEN_SET = frozenset(
    {"on_success", "event_filter", "concurrency", "sticky", "default_priority"}
)
# The same for a step's fields (of ``steps``, ``on_failure`` and ``on_success``): hashed only
# when set (not null, not empty).
STEP_HASHED_WHEN_SET = frozenset({"rate_limits", "desired_worker_labels", "concurrency"})


def workflow_version(definition: dict[str, Any]) -> str:
    """The version of a definition, given as its JSON object (extra keys are ignored)."""
    body = {
        key: definition.get(key)
        for key in VERSIONED
        if key not in HASHED_WHEN_SET or definition.get(key) is not None
    }
    body["steps"] = sorted(
        (
            {**_step(step), "parents": sorted(step.get("parents") or ())}
            for step in body["steps"] or ()
        ),
        key=lambda step: str(step.get("name")),
    )
    for special in ("on_failure", "on_success"):
        value = body.get(special)
        if isinstance(value, dict):
            body[special] = _step(value)
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()[:16]


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """A step's definition as hashed: without the fields added later that it leaves
    unset."""
    return {
        key: value
        for key, value in step.items()
        if key not in STEP_HASHED_WHEN_SET or value  # null, empty (a list, a tuple, a map): out
    }
