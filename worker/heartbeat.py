"""Worker liveness: a heartbeat on ``<t>.<ns>.workers.<id>`` every ``INTERVAL_S``, with a
message TTL so the liveness stream does not keep them.

Invariant: from :meth:`Heartbeat.start` until :meth:`Heartbeat.stop` a beat goes out every
``INTERVAL_S`` whatever the worker is doing, its drain included (``natchet workers list``
calls a worker ``DEAD`` after three missed beats). The status says ``ACTIVE``, then
``STOPPING`` from the moment a shutdown begins, and ``STOPPED`` in the last beat, sent once
the worker has stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from eventstore import Append, Connection, NatchetError, append
from eventstore.waits import wait_set
from schemas import WorkerHeartbeat, WorkerStatus, encode, utcnow
from schemas.labels import LabelValue
from schemas.subjects import Scope
from worker import version

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
TTL_S = 300


class Heartbeat:
    def __init__(
        self,
        conn: Connection,
        scope: Scope,
        worker_id: str,
        name: str,
        actions: list[str],
        slots: int,
        running: Callable[[], int],
        labels: Callable[[], dict[str, LabelValue]] | None = None,
        *,
        directed: bool = False,
    ) -> None:
        self.conn = conn
        self.subject = scope.worker(worker_id)
        self.worker_id = worker_id
        self.name = name
        self.actions = tuple(actions)
        self.slots = slots
        self.running = running
        self.labels = labels or dict
        self.directed = directed
        self.started_at = utcnow()
        self.sdk_version = version.sdk_version()
        self.status = WorkerStatus.ACTIVE
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def beat(self) -> None:
        message = WorkerHeartbeat(
            worker_id=self.worker_id,
            name=self.name,
            actions=self.actions,
            slots=self.slots,
            running=self.running(),
            status=self.status,
            started_at=self.started_at,
            sdk_version=self.sdk_version,
            protocol=version.announced_protocol(),
            labels=self.labels(),
            directed=self.directed,
        )
        try:
            await append(self.conn, Append(self.subject, encode(message), ttl_s=TTL_S), timeout_s=2)
        except NatchetError as exc:
            log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            await self.beat()
            await wait_set(self._changed, INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat:{self.name}")

    def now(self) -> None:
        """Something the engine places by changed (the labels): beat at once."""
        self._changed.set()

    def stopping(self) -> None:
        """A shutdown began: say so at once, and keep beating."""
        self.status = WorkerStatus.STOPPING
        self._changed.set()

    async def stop(self) -> None:
        """The worker has stopped: end the beats with a last one saying ``STOPPED`` (none
        if they never started)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.status = WorkerStatus.STOPPED
        await self.beat()
