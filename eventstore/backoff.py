"""How long to wait before trying again: the one policy of every reconnect and retry loop.

Pure: it computes a delay and never sleeps (as dramatiq's ``compute_backoff``). A loop keeps
its count of consecutive failures, asks :meth:`Backoff.delay`, and resets the count when it
succeeds.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Backoff:
    """``base_s`` after the first failure, doubling up to ``max_s``."""

    base_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 or less: none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.max_s, self.base_s * self.factor ** (failures - 1)))


# Appends, fetches, reconnects: a tenth of a second, up to 1 s. Not more: on a NATS cluster
# a consumer or stream whose leader died answers "no responders" until a new one is elected
# (4-9 s), and a loop that had backed off to 5 s found it up to 4 s late (docs/scaling.md).
RETRY = Backoff(max_s=1.0)
RESTART = Backoff(base_s=0.5, max_s=10.0)  # a failed component started again
