"""The ``options`` of ``event.push`` and ``admin.run_workflow`` (Hatchet's
``PushEventOptions`` and ``TriggerWorkflowOptions``): a mapping, or an object with the same
attributes. natchet reads ``additional_metadata`` and ``priority`` (1..3); any other option
is refused by name rather than silently ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventstore import ConfigError
from schemas.metadata import check_metadata
from schemas.priority import priority_problem

KNOWN = frozenset({"additional_metadata", "priority"})


def metadata_option(options: Any, what: str = "options") -> dict[str, str]:
    """The checked ``additional_metadata`` of ``options`` (``{}`` without it)."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        unknown = sorted(str(k) for k in options if k not in KNOWN)
        if unknown:
            raise ConfigError(
                f"{what}: natchet does not support {', '.join(unknown)} (it reads "
                "additional_metadata and priority)"
            )
        metadata = options.get("additional_metadata")
    else:
        metadata = getattr(options, "additional_metadata", None)
    return check_metadata(metadata, f"{what}.additional_metadata")


def priority_option(options: Any, what: str = "options") -> int | None:
    """The checked ``priority`` of ``options`` (None without it); ConfigError outside 1..3."""
    if options is None:
        return None
    if isinstance(options, Mapping):
        value = options.get("priority")
    else:
        value = getattr(options, "priority", None)
    problem = priority_problem(value, f"{what}.priority")
    if problem is not None:
        raise ConfigError(problem)
    return value
