"""The registry of live workers, per scope, folded from their heartbeats (issue 15).

It is an outside input, like time: it is NOT folded from the log, and never snapshotted. A
decision it informs (a task placed on one worker) is recorded in the log by that decision
itself (the task's subject), so replaying the log never needs the registry.

Each worker's latest heartbeat (``<t>.<ns>.workers.<id>``) is kept, with the directed
tasks this dispatcher placed on it that are still out (``out``: offered, and their attempt
not over in the folded state, :meth:`Workers.settle`), and how many were out when the beat
came (``at_beat``). Its free slots are ``slots``, less the beat's running tasks that were
not placed ones (``running - at_beat``, the shared queue's), less the placed ones out now:
two placements in a row between beats do not both count the same free slot, and a placed
task that ends frees its slot at once, not at the next beat (which would cap placed tasks
at a worker's slots per heartbeat period). It is an estimate between beats: a placed task
offered but not yet pulled at the beat is not in its ``running``, so the shared queue's
share can be undercounted by those until the next beat (the worker then takes the extra
task when a slot frees; it never runs more than its slots).

A worker counts as alive by :mod:`dispatcher.liveness`'s rule (not ``STOPPED``, heard from
within ``DEAD_AFTER_S``). :meth:`Workers.generation` grows whenever
something a placement could depend on changes (a worker appears, goes, or its labels,
actions, slots, running or status change), so the service knows when to look again at
tasks held for want of a worker; :attr:`Workers.departures` grows only when a worker goes
(forgotten) or starts stopping, when the tasks placed on it may have to move
(:mod:`dispatcher.moved`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import attrs

from dispatcher.liveness import DEAD_AFTER_S, alive
from schemas import Scope, WorkerHeartbeat, WorkerStatus
from schemas.labels import LabelValue

WorkerId = tuple[Scope, str]  # (scope, worker id)
TaskRef = tuple[str, str, int]  # (run id, step, attempt)


@attrs.frozen
class LiveWorker:
    """One worker as its latest heartbeat describes it, with the directed tasks placed on it
    that are out now (``out``) and were out when the beat came (``at_beat``)."""

    beat: WorkerHeartbeat
    out: int = 0
    ready: bool = False  # the engine created its directed consumer
    at_beat: int = 0

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
        """Free slots: ``slots`` less the shared queue's running tasks (the beat's, less
        the placed ones it counted) and the placed tasks out now."""
        shared = max(0, self.beat.running - self.at_beat)
        return max(0, self.beat.slots - shared - self.out)

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
        # The placed tasks out, per worker and per run: (step, attempt) of a run -> worker.
        self._out: dict[WorkerId, set[TaskRef]] = {}
        self._placed: dict[str, dict[tuple[str, int], WorkerId]] = {}
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
        out = len(self._out.get((scope, beat.worker_id), ()))
        workers[beat.worker_id] = LiveWorker(beat, out, ready, at_beat=out)
        stopping = beat.status is not WorkerStatus.ACTIVE
        if known is not None and known.beat.status is WorkerStatus.ACTIVE and stopping:
            self.departures += 1  # it stops: what waits for it there must move
        changed = known is None or known.at_beat != out or not _same(known.beat, beat)
        if changed:
            self.generation += 1
        return changed

    def consumer_ready(self, scope: Scope, worker_id: str) -> None:
        """The engine created ``worker_id``'s directed consumer: it may be sent tasks."""
        worker = self._scopes.get(scope, {}).get(worker_id)
        if worker is not None and not worker.ready:
            self._scopes[scope][worker_id] = attrs.evolve(worker, ready=True)
            self.generation += 1

    def sent(self, scope: Scope, worker_id: str, run_id: str, step: str, attempt: int) -> None:
        """This dispatcher placed the task of ``run_id``'s ``step`` (its ``attempt``) on
        ``worker_id``: one slot less until :meth:`settle` sees that attempt over."""
        worker = self._scopes.get(scope, {}).get(worker_id)
        if worker is None:
            return
        wid = (scope, worker_id)
        previous = self._placed.setdefault(run_id, {}).get((step, attempt))
        if previous is not None:  # placed again (a wake of a durable step): moved here
            self._out.get(previous, set()).discard((run_id, step, attempt))
        self._placed[run_id][(step, attempt)] = wid
        self._out.setdefault(wid, set()).add((run_id, step, attempt))
        self._scopes[scope][worker_id] = attrs.evolve(worker, out=len(self._out[wid]))

    def placed(self, run_id: str) -> bool:
        """Whether a task of run ``run_id`` is counted out on a worker."""
        return run_id in self._placed

    def settle(self, run_id: str, out: Callable[[str, int], bool]) -> bool:
        """After a message of run ``run_id`` was folded: take its placed tasks whose attempt
        is no longer ``out`` (``out(step, attempt)``) off their workers; return whether one
        was (a slot freed: tasks held for want of one may go)."""
        placed = self._placed.get(run_id)
        if not placed:
            return False
        freed = False
        for (step, attempt), wid in list(placed.items()):
            if out(step, attempt):
                continue
            del placed[(step, attempt)]
            refs = self._out.get(wid)
            if refs is not None:
                refs.discard((run_id, step, attempt))
                worker = self._scopes.get(wid[0], {}).get(wid[1])
                if worker is not None:
                    self._scopes[wid[0]][wid[1]] = attrs.evolve(worker, out=len(refs))
            freed = True
        if not placed:
            del self._placed[run_id]
        if freed:
            self.generation += 1
        return freed

    def forget_dead(self, now: dt.datetime) -> list[tuple[Scope, str]]:
        """Drop workers no longer alive; return which went."""
        gone: list[tuple[Scope, str]] = []
        for scope, workers in list(self._scopes.items()):
            for worker_id in [w for w, lw in workers.items() if not alive(lw.beat, now)]:
                del workers[worker_id]
                gone.append((scope, worker_id))
                for run_id, step, attempt in self._out.pop((scope, worker_id), ()):
                    placed = self._placed.get(run_id, {})
                    placed.pop((step, attempt), None)
                    if not placed:
                        self._placed.pop(run_id, None)
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
