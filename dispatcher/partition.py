"""Partitions of one tenant's dispatch (issue 16): which runs a dispatcher decides for.

A tenant's dispatch may be split into ``count`` partitions, each a dispatcher of its own
(its own durable consumer, snapshot and lease, so each may run in a different engine).
Every partition reads and folds the tenant's whole log, as a single dispatcher does, and
decides only for the runs it **owns**; what another partition decides reaches it through
the log and is folded like a decision of a dispatcher before it. Ownership is a pure
function of what every partition has folded at the same point of the log, so all of them
agree on it without talking:

- A run whose workflow uses flow control across runs (a concurrency key, a step
  concurrency key, a rate limit, or a priority) is **coordinated**: partition 0 owns it,
  so the counters those promises rest on (a key's runs in flight, a limit's window, the
  priority window) have one writer.
- Any other run is owned by partition ``crc32(run id) % count``.
- Crons and scheduled runs (their timers and fires), and the worker-facing side of the
  tenant, belong to partition 0; the runs a fire starts are created there whoever owns
  them (creation comes before anything else of a run, so its owner folds it first).

One partition (``count`` 1) owns everything: the dispatcher as it always was.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import attrs

from eventstore.provision import dispatcher_consumer_name
from schemas.concurrency import ConcurrencyDef
from schemas.messages import StepDef

MAX_PARTITIONS = 64
SNAPSHOT_NAME = "dispatcher"  # a whole dispatch's snapshots, and partition 0's


@attrs.frozen
class Partition:
    """Partition ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1 to {MAX_PARTITIONS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} does not exist in {self.count}")

    @property
    def whole(self) -> bool:
        """The tenant's only partition: it owns everything."""
        return self.count == 1

    @property
    def coordinator(self) -> bool:
        """Partition 0: coordinated runs, crons, scheduled runs, the timers' fires."""
        return self.index == 0

    @property
    def consumer(self) -> str:
        """Its durable consumer of the log: partition 0 keeps the one a single dispatcher
        had, so a tenant split later goes on where it was."""
        return dispatcher_consumer_name(self.index)

    @property
    def snapshot(self) -> str:
        """The name of its snapshots in the tenant's snapshot bucket."""
        return SNAPSHOT_NAME if self.index == 0 else f"{SNAPSHOT_NAME}-{self.index}"

    def owner(self, run_id: str, coordinated: bool) -> int:
        """The partition that owns the run ``run_id``."""
        if coordinated or self.count == 1:
            return 0
        return zlib.crc32(run_id.encode()) % self.count

    def owns(self, run_id: str, coordinated: bool) -> bool:
        return self.count == 1 or self.owner(run_id, coordinated) == self.index


WHOLE = Partition()


def coordinated(
    concurrency: ConcurrencyDef | None, priority: int | None, steps: Iterable[StepDef]
) -> bool:
    """Whether a run with this workflow concurrency, priority and steps (its DAG and its
    on-failure and on-success steps) uses flow control across runs."""
    if concurrency is not None or priority is not None:
        return True
    return any(s.concurrency is not None or s.rate_limits for s in steps)
