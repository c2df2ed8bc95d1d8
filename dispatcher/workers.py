"""The registry of live workers, per scope, folded from their heartbeats (issue 15).

It is an outside input, like time: it is NOT folded from the log, and never snapshotted. A
decision it informs (a task placed on one worker) is recorded in the log by that decision
itself (the task's subject), so replaying the log never needs the registry.

Each worker's latest heartbeat (``<t>.<ns>.workers.<id>``) is kept, with the directed
tasks this dispatcher sent it since that beat (``sent``): its free slots are the beat's
``slots - running`` less those, so two placements in a row between beats do not both count
the same free slot. A worker counts as alive by :mod:`dispatcher.liveness`'s rule (not
``STOPPED``, heard from within ``DEAD_AFTER_S``). :meth:`Workers.generation` grows whenever
something a placement could depend on changes (a worker appears, goes, or its labels,
actions, slots, running or status change), so the service knows when to look again at
tasks held for want of a worker; :attr:`Workers.departures` grows only when a worker goes
(forgotten) or starts stopping, when the tasks placed on it may have to move
(:mod:`dispatcher.moved`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import attrs

from dispatcher.liveness import DEAD_AFTER_S, alive
from schemas import Scope, WorkerHeartbeat, WorkerStatus
from schemas.labels import LabelValue


@attrs.frozen
class LiveWorker:
    """One worker as its latest heartbeat describes it, with the directed tasks sent to it
    since (``sent``)."""

    beat: WorkerHeartbeat
    sent: int = 0
    ready: bool = False  # the engine created its directed consumer

    @property
    def worker_id(self) -> str:
        return self.beat.worker_id

    @property
    def name(self) -> str:
        return self.beat.name

    @property
    def actions(self) -> tuple[str, ...]:
        return self.beat.actions

    @property
    def labels(self) -> Mapping[str, LabelValue]:
        return self.beat.labels

    @property
    def directed(self) -> bool:
        """Whether it may be sent a placed task: it reads its own directed consumer, and
        the engine created that consumer, and it is not stopping."""
        return self.beat.directed and self.ready and self.beat.status is WorkerStatus.ACTIVE

    @property
    def slots(self) -> int:
        return self.beat.slots

    @property
    def free(self) -> int:
        """Free slots: the beat's, less the directed tasks sent since."""
        return max(0, self.beat.slots - self.beat.running - self.sent)

    def runs(self, workflow: str, step: str | None = None) -> bool:
        """Whether it registered ``workflow`` (its step ``step``, when given)."""
        if step is not None:
            return f"{workflow}:{step}" in self.beat.actions
        return any(a.startswith(f"{workflow}:") for a in self.beat.actions)


def _same(a: WorkerHeartbeat, b: WorkerHeartbeat) -> bool:
    """Whether two beats of one worker say the same for placement."""
    return (
        a.actions == b.actions
        and a.slots == b.slots
        and a.running == b.running
        and a.status == b.status
        and a.labels == b.labels
        and a.directed == b.directed
    )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Workers:
    """Live workers per scope, from heartbeats (see the module's docstring)."""

    def __init__(self, since: dt.datetime | None = None) -> None:
        self._scopes: dict[Scope, dict[str, LiveWorker]] = {}
        self.generation = 0
        self.departures = 0
        # When it began listening (None: long enough ago, or the liveness stream's latest
        # beats were read): before ``DEAD_AFTER_S`` has passed, a live worker may not have
        # beaten yet, so an unknown worker is not yet a gone one.
        self.since = since

    def settled(self, now: dt.datetime) -> bool:
        """Whether every live worker has been heard by ``now``."""
        return self.since is None or (now - self.since).total_seconds() > DEAD_AFTER_S

    def heard(self, scope: Scope, beat: WorkerHeartbeat) -> bool:
        """Take a heartbeat; return whether placement could now decide differently. A beat
        older than the one kept (out of order) is ignored."""
        workers = self._scopes.setdefault(scope, {})
        known = workers.get(beat.worker_id)
        if known is not None and beat.at < known.beat.at:
            return False
        ready = known is not None and known.ready
        workers[beat.worker_id] = LiveWorker(beat, ready=ready)
        stopping = beat.status is not WorkerStatus.ACTIVE
        if known is not None and known.beat.status is WorkerStatus.ACTIVE and stopping:
            self.departures += 1  # it stops: what waits for it there must move
        changed = known is None or known.sent > 0 or not _same(known.beat, beat)
        if changed:
            self.generation += 1
        return changed

    def consumer_ready(self, scope: Scope, worker_id: str) -> None:
        """The engine created ``worker_id``'s directed consumer: it may be sent tasks."""
        worker = self._scopes.get(scope, {}).get(worker_id)
        if worker is not None and not worker.ready:
            self._scopes[scope][worker_id] = attrs.evolve(worker, ready=True)
            self.generation += 1

    def sent(self, scope: Scope, worker_id: str) -> None:
        """This dispatcher sent a directed task to ``worker_id`` (one slot less until its
        next beat)."""
        worker = self._scopes.get(scope, {}).get(worker_id)
        if worker is not None:
            self._scopes[scope][worker_id] = attrs.evolve(worker, sent=worker.sent + 1)

    def forget_dead(self, now: dt.datetime) -> list[tuple[Scope, str]]:
        """Drop workers no longer alive; return which went."""
        gone: list[tuple[Scope, str]] = []
        for scope, workers in list(self._scopes.items()):
            for worker_id in [w for w, lw in workers.items() if not alive(lw.beat, now)]:
                del workers[worker_id]
                gone.append((scope, worker_id))
            if not workers:
                del self._scopes[scope]
        if gone:
            self.generation += 1
            self.departures += len(gone)
        return gone

    def live(self, scope: Scope, now: dt.datetime) -> list[LiveWorker]:
        """The scope's live workers, by worker id."""
        workers = self._scopes.get(scope, {})
        return [workers[w] for w in sorted(workers) if alive(workers[w].beat, now)]

    def get(self, scope: Scope, worker_id: str, now: dt.datetime) -> LiveWorker | None:
        """``worker_id`` if it is alive in ``scope``."""
        worker = self._scopes.get(scope, {}).get(worker_id)
        return worker if worker is not None and alive(worker.beat, now) else None

    def capacity(self, scope: Scope, workflow: str, now: dt.datetime | None = None) -> int:
        """The slots of the live workers of ``scope`` that registered any step of
        ``workflow`` (free or not): how many of its tasks could run at once."""
        at = _utc_now() if now is None else now
        return sum(w.slots for w in self.live(scope, at) if w.runs(workflow))
