"""A step's own ``logging``, captured into the step's log when the user opts in, as in
Hatchet: ``Hatchet(config=ClientConfig(logger=logging.getLogger()))``.

A handler on that logger hands each record logged inside a step attempt (its task, or its
sync step's thread, which runs in a copy of the attempt's context) to the attempt's log,
as ``context.log`` does. Records logged outside any attempt, and natchet's own (the
worker's, the event store's, nats-py's), are left to the logger's other handlers: the
step log is the user's, and a failing append must not log into the log it failed to
append to.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator

OWN = frozenset({"worker", "eventstore", "schemas", "natchet", "nats", "asyncio"})
FORMAT = "%(levelname)s %(name)s: %(message)s"

_sink: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "natchet_step_log", default=None
)


@contextlib.contextmanager
def capturing(sink: Callable[[str], None]) -> Iterator[None]:
    """Inside: what a captured logger says goes to ``sink`` (a step attempt's log)."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


class StepLogHandler(logging.Handler):
    """Hands a step's records to its attempt's log (:func:`capturing`)."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _sink.get()
        if sink is None or record.name.partition(".")[0] in OWN:
            return
        try:
            sink(self.format(record))
        except Exception:  # a handler never raises into the code that logged
            self.handleError(record)


def capture(logger: logging.Logger) -> None:
    """Capture what ``logger`` (and its children) log inside a step. Idempotent."""
    if not any(isinstance(h, StepLogHandler) for h in logger.handlers):
        handler = StepLogHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
