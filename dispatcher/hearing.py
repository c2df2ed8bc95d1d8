"""The dispatcher's ear for workers (issue 15): heartbeats into the registry of live workers
(:mod:`dispatcher.workers`), each directed worker's consumer made, and the held tasks
looked at again when the live workers change.

The worker gate (:mod:`dispatcher.gate`) passes on the beats of the workers it accepts; at
start the latest beat of each worker still kept in the liveness stream is read, so placement
knows the live workers at once rather than after their next beats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from dispatcher.held import Holds
from dispatcher.workers import Workers
from eventstore import Connection, NatchetError, ensure_directed_consumer, latest
from schemas import DecodeError, Scope, SubjectError, WorkerHeartbeat, WorkerStatus, parse
from schemas.codec import decode_as
from schemas.protocol import accepts
from schemas.subjects import NAME_RE, live_subjects

log = logging.getLogger(__name__)


class Hearing:
    """Live workers of ``tenant``, kept across restarts of the dispatcher's state."""

    def __init__(self, nc: Connection, tenant: str) -> None:
        self.nc = nc
        self.tenant = tenant
        self.workers = Workers(since=dt.datetime.now(dt.UTC))
        self._generation = 0  # of ``workers`` when held tasks were last marked to recheck
        self._departures = 0  # of ``workers`` when moves were last looked for
        self._directed: set[tuple[Scope, str]] = set()  # workers whose consumer was asked for
        self._spawned: set[asyncio.Task[None]] = set()

    def heard(self, scope: Scope, beat: WorkerHeartbeat) -> None:
        """A heartbeat of a worker the engine serves; ``workers.generation`` grows when it
        changes what placement could decide. A worker that takes directed tasks gets its
        consumer (once; again if that failed)."""
        if scope.tenant != self.tenant or not NAME_RE.match(beat.worker_id):
            return
        self.workers.heard(scope, beat)
        key = (scope, beat.worker_id)
        if beat.directed and beat.status is WorkerStatus.ACTIVE and key not in self._directed:
            self._directed.add(key)
            task = asyncio.create_task(self._ensure_directed(scope, beat.worker_id))
            self._spawned.add(task)
            task.add_done_callback(self._spawned.discard)

    async def hear_kept_beats(self) -> None:
        """The latest beat of each worker still kept in the liveness stream (those the gate
        would refuse left out, as the gate leaves them out)."""
        try:
            records = await latest(self.nc, self.tenant, live_subjects(self.tenant))
        except Exception as exc:
            log.warning("dispatcher %s: live workers not read at start: %s", self.tenant, exc)
            return
        for rec in records:
            try:
                parsed = parse(rec.subject)
                beat = decode_as(WorkerHeartbeat, WorkerHeartbeat.KIND, rec.data)
            except (SubjectError, DecodeError):
                continue
            if beat.worker_id == parsed.rest[0] and accepts(beat.protocol):
                self.heard(parsed.scope, beat)
        self.workers.since = None  # every live worker's latest beat heard: a worker unknown
        # now is gone (``Workers.settled``; not read, it waits for their next beats)

    def look(self, holds: Holds, now: dt.datetime) -> bool:
        """Forget dead workers; if the live workers changed since the last look, mark the
        held tasks to be looked at again (``release``: a worker with the labels came, one
        freed a slot, a sticky run's worker went). Return whether a worker went or began
        stopping since the last look (the tasks placed on it move: ``dispatcher.moved``)."""
        for gone in self.workers.forget_dead(now):
            self._directed.discard(gone)  # should it beat again: its consumer is made again
        if self.workers.generation != self._generation:
            self._generation = self.workers.generation
            holds.dirty = True
        departed = self.workers.departures != self._departures
        self._departures = self.workers.departures
        return departed

    async def _ensure_directed(self, scope: Scope, worker_id: str) -> None:
        try:
            await ensure_directed_consumer(self.nc, scope, worker_id)
        except NatchetError as exc:
            log.warning(
                "dispatcher %s: no directed consumer for worker %s yet: %s",
                self.tenant, worker_id, exc,
            )  # fmt: skip
            self._directed.discard((scope, worker_id))  # the next beat tries again
            return
        self.workers.consumer_ready(scope, worker_id)
