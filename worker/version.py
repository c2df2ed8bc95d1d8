"""What this worker announces in its heartbeats: the SDK's release and the wire protocol it
speaks (``PROTOCOL``; read at each beat, so a test can pose as another version)."""

from __future__ import annotations

from importlib import metadata

from schemas import protocol

PROTOCOL = protocol.PROTOCOL


def sdk_version() -> str:
    """The installed release of the natchet SDK, or ``"unknown"``."""
    try:
        return metadata.version("natchet")
    except metadata.PackageNotFoundError:
        return "unknown"


def announced_protocol() -> int:
    return PROTOCOL
