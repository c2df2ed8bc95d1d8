"""natchet's own release, as installed (the engine's and the CLI's; the SDK reports its own)."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "natchet"


def natchet_version() -> str:
    """The installed release of natchet, or ``"unknown"`` when run from a tree that was
    never installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
