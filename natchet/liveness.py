"""When a worker counts as alive, from its heartbeats: the rule lives with the dispatcher
(:mod:`dispatcher.liveness`), which places tasks on live workers; kept here for the CLI."""

from __future__ import annotations

from dispatcher.liveness import DEAD_AFTER_S, alive, seconds_since

__all__ = ["DEAD_AFTER_S", "alive", "seconds_since"]
