"""Exceptions a step raises on purpose."""

from __future__ import annotations

from eventstore import NatchetError


class NonRetryableError(NatchetError):
    """Raise from a step to fail it at once, whatever retries it has left."""
