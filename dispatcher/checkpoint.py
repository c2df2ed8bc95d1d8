"""When the dispatcher snapshots its state, which sequence a snapshot covers, and which
finished runs it forgets (the argument is in ``dispatcher.snapshot``'s doc).

The service tells :class:`Checkpoints` what it folded (``rebuilt``, ``folded``,
``delivered``) and calls :meth:`Checkpoints.take` between batches, when every output it
folded is stored and every input it fetched is acked, with the consumer's ack floor read
then. ``take`` first forgets the finished runs of the previous checkpoint if the floor has
passed every one of their ends, then captures the state at once (``dump`` is synchronous:
the state cannot change under it) and stores it in the background, one write at a time: a
snapshot is an optimisation, and a failure to store one is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging

import attrs

from dispatcher.snapshot import Snapshot, SnapshotError, dump, load
from dispatcher.state import State
from eventstore import NatchetError, SnapshotStore

log = logging.getLogger(__name__)


@attrs.frozen
class SnapshotPolicy:
    """Snapshot after ``every_messages`` messages of the log went by (that bounds what a
    restart folds after loading it), or after ``every_s`` seconds if anything changed."""

    enabled: bool = True
    every_messages: int = 20_000
    every_s: float = 30.0


class Checkpoints:
    def __init__(self, store: SnapshotStore, policy: SnapshotPolicy) -> None:
        self.store = store
        self.policy = policy
        self.covered = 0  # the state holds the fold of every message up to here (L)
        self.high = 0  # the highest sequence of anything folded so far
        self.forgot_through = 0  # runs that ended at or below this may be forgotten
        self.since = 0  # messages delivered since the last snapshot
        self.delivered = 0  # the highest sequence the consumer delivered
        self.last_at = 0.0  # loop time of the last snapshot
        # The finished runs of the last checkpoint, every one ended at or below ``[0]``.
        self._forget: tuple[int, set[str]] = (0, set())
        self._writing: asyncio.Task[None] | None = None

    async def restore(self) -> Snapshot | None:
        """The stored snapshot, or ``None`` (none, unreadable, or another format: then the
        dispatcher rebuilds from the start)."""
        if not self.policy.enabled:
            return None
        try:
            data = await self.store.load()
            if data is None:
                return None
            snapshot = load(data)
        except (NatchetError, SnapshotError) as exc:
            log.warning("%s: cannot use the snapshot (%s); rebuilding from the start", self, exc)
            return None
        self.forgot_through = snapshot.forgot_through
        return snapshot

    def rebuilt(self, state: State, end: int) -> None:
        """The state now folds every message up to ``end``; every run it knows as done
        ended at or below it."""
        self.covered = self.high = end
        self._forget = (end, set(state.done))

    def folded(self, seqs: list[int]) -> None:
        """Messages at ``seqs`` are folded (outputs stored, messages delivered)."""
        if seqs:
            self.high = max(self.high, *seqs)

    def delivered_to(self, seqs: list[int]) -> None:
        """The consumer delivered (and the dispatcher folded and acked) ``seqs``."""
        if seqs:
            self.since += len(seqs)
            self.delivered = max(self.delivered, *seqs)
            self.high = max(self.high, self.delivered)

    def due(self, now: float) -> bool:
        if not self.policy.enabled:
            return False
        if self.since >= self.policy.every_messages:
            return True
        changed = self.since > 0 or bool(self._forget[1])
        return changed and now - self.last_at >= self.policy.every_s

    def take(self, state: State, floor: int, now: float) -> None:
        """Forget what the floor allows, then snapshot ``state`` as of ``max(L, floor)``."""
        mark, ended = self._forget
        if ended and floor >= mark:
            state.done -= ended
            self.forgot_through = max(self.forgot_through, mark)
            ended = set()
        if not ended:
            self._forget = (self.high, set(state.done))
        self.since, self.last_at = 0, now
        if not self.policy.enabled:
            return
        if self._writing is not None and not self._writing.done():
            return  # the previous snapshot is still being stored: the next one will do
        seq = max(self.covered, floor)
        try:
            data = dump(Snapshot(seq, state, self.forgot_through))
        except TypeError as exc:
            log.warning("%s: cannot snapshot the state: %s", self, exc)
            return
        self._writing = asyncio.create_task(self._write(data, seq))

    async def _write(self, data: bytes, seq: int) -> None:
        try:
            await self.store.save(data)
        except NatchetError as exc:
            log.warning("%s: could not store the snapshot at %d: %s", self, seq, exc)
        else:
            log.debug("%s: snapshot at %d stored (%d bytes)", self, seq, len(data))

    async def close(self) -> None:
        """Wait for the snapshot being stored, if one is."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    def __str__(self) -> str:
        return f"dispatcher {self.store.tenant}"
