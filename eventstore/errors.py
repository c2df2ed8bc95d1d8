"""natchet's root exception and the eventstore's layer of it."""

from __future__ import annotations


class NatchetError(Exception):
    """Root of every error natchet raises on purpose."""


class ConfigError(NatchetError):
    """A setting is missing or malformed."""


class ConnectError(NatchetError):
    """The NATS server cannot be used: unreachable, too old, or without JetStream."""


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
