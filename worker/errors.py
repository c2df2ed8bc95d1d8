"""Exceptions a step raises on purpose."""

from __future__ import annotations

from eventstore import NatchetError


class NonRetryableError(NatchetError):
    """Raise from a step to fail it at once, whatever retries it has left."""


class WorkerFatalError(NatchetError):
    """The worker stopped on a critical failure: the engine refused it, or NATS was lost
    past its bound (``code``: the exit code ``worker.start()`` ends the process with)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class InvalidInputError(NatchetError, ValueError):
    """A run's input does not match its workflow's ``input_validator`` (one line, naming
    each field that is wrong): raised by ``wf.run(...)`` before anything is sent."""
