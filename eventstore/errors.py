"""The eventstore's layer of natchet's errors (the root lives in ``schemas.errors``)."""

from __future__ import annotations

from schemas.errors import ConfigError, NatchetError

__all__ = [
    "AppendError",
    "AppendRefusedError",
    "ConfigError",
    "ConnectError",
    "DuplicateBatchError",
    "LogFullError",
    "NatchetError",
    "PermissionDeniedError",
    "ReadError",
    "TransportError",
]


class ConnectError(NatchetError):
    """The NATS server cannot be used: unreachable, too old, or without JetStream."""


class AuthRefusedError(ConnectError):
    """The NATS server refuses the credential (unknown, revoked or expired): trying again
    with the same one changes nothing."""


class TransportError(NatchetError):
    """NATS did not take a message, an ack or a request: the connection is down, closed,
    or the server did not answer in time. Usually worth trying again."""


class ReadError(NatchetError):
    """Reading the log failed: a timeout, or an error status from the server."""


class AppendError(NatchetError):
    """JetStream refused or did not acknowledge an append."""


class DuplicateBatchError(AppendError):
    """An atomic batch whose dedup ids are already in the log: it was appended before."""


class PermissionDeniedError(AppendError):
    """The broker refused a publish: the credential does not allow that subject."""


class AppendRefusedError(AppendError):
    """JetStream answered an append with an error. ``permanent`` when sending the same
    message again cannot succeed (it is too large, or over a limit)."""

    def __init__(self, message: str, description: str) -> None:
        super().__init__(message)
        self.description = description

    @property
    def permanent(self) -> bool:
        text = self.description.lower()
        return "maximum" in text or "exceeds" in text or "too large" in text


class LogFullError(AppendRefusedError):
    """The tenant's log reached its storage quota: it refuses new messages and keeps every
    old one. Sending again succeeds once the quota is raised, so it is not permanent."""

    MARKERS = ("maximum bytes exceeded", "resource limits exceeded", "insufficient resources")

    @classmethod
    def matches(cls, description: str) -> bool:
        return any(marker in description.lower() for marker in cls.MARKERS)

    @property
    def permanent(self) -> bool:
        return False
