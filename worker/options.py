"""The ``options`` of ``event.push`` and ``admin.run_workflow`` (Hatchet's
``PushEventOptions`` and ``TriggerWorkflowOptions``): a mapping, or an object with the same
attributes. natchet reads ``additional_metadata``; any other option is refused by name
rather than silently ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventstore import ConfigError
from schemas.metadata import check_metadata

KNOWN = frozenset({"additional_metadata"})


def metadata_option(options: Any, what: str = "options") -> dict[str, str]:
    """The checked ``additional_metadata`` of ``options`` (``{}`` without it)."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        unknown = sorted(str(k) for k in options if k not in KNOWN)
        if unknown:
            raise ConfigError(
                f"{what}: natchet does not support {', '.join(unknown)} (it reads "
                "additional_metadata)"
            )
        metadata = options.get("additional_metadata")
    else:
        metadata = getattr(options, "additional_metadata", None)
    return check_metadata(metadata, f"{what}.additional_metadata")
